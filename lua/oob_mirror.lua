-- oob_mirror: the Envoy Lua plugin of oob-node (entry point).
--
-- Where it sits: in Envoy's HTTP filter chain (envoy.filters.http.lua), next to the request
-- path but never in it. It copies each request and its response into a v1 record
-- (oob.record), buffers records per worker (oob.batch) and sends them to the node's batch
-- listener with a fire-and-forget httpCall: POST /v1/batch, msgpack body, bearer token.
-- It never changes, delays or fails a request: every error is caught, counted and logged
-- at debug level, a failed or slow node only loses records.
--
-- Use from the filter's inline code (the Helm chart and deploy/envoy/gateway.yaml do this):
--   local oob = require("oob_mirror")
--   oob.configure({ cluster = "oob_node", token = "...", batch_size = 50 })
--   function envoy_on_request(h) oob.on_request(h) end
--   function envoy_on_response(h) oob.on_response(h) end

local config = require("oob.config")
local record = require("oob.record")
local batch = require("oob.batch")

local _M = { _VERSION = "0.1.0" }

local pcall = pcall
local tostring = tostring
local clock = batch.clock

local cfg, worker, config_error, config_error_logged

-- Set up this worker's plugin. Returns true, or nil and an error naming the option: the
-- plugin then stays disabled (requests pass untouched) and logs the error once per worker,
-- rather than making Envoy (or Istio's whole listener update) reject the configuration.
function _M.configure(opts)
  local c, err = config.new(opts)
  if not c then
    cfg, worker, config_error, config_error_logged = nil, nil, err, false
    return nil, err
  end
  cfg, worker, config_error = c, batch.new(c), nil
  return true
end

-- Counters of this worker (captured, dropped, errors, ...), for tests and debugging.
function _M.stats()
  return worker and worker.stats
end

-- This worker's batch object (tests inspect its buffer and pending state).
function _M._worker()
  return worker
end

local function log_debug(handle, msg)
  pcall(handle.logDebug, handle, "oob-node: " .. msg)
end

local function fail(handle, err)
  if worker then worker.stats.errors = worker.stats.errors + 1 end
  log_debug(handle, "error: " .. tostring(err))
end

local function batch_headers(token)
  local s = worker.stats
  local headers = {
    [":method"] = "POST",
    [":path"] = cfg.path,
    [":authority"] = cfg.authority,
    ["content-type"] = "application/msgpack",
    -- what this worker lost so far, so the node can report the plugin's own drops
    ["x-oob-plugin-dropped"] = tostring(s.dropped + s.encode_errors),
    ["x-oob-plugin-errors"] = tostring(s.errors + s.send_errors),
  }
  if token ~= "" then headers["authorization"] = "Bearer " .. token end
  return headers
end

-- Send every full or expired batch: asynchronous httpCall, the request never waits for it.
local function flush(handle, now)
  while worker:due(now) do
    local body, n = worker:take()
    if not body then return end
    local ok, err = pcall(handle.httpCall, handle, cfg.cluster, batch_headers(cfg.token),
                          body, cfg.timeout_ms, true)
    if ok then
      worker.stats.batches = worker.stats.batches + 1
      worker.stats.records_sent = worker.stats.records_sent + n
    else
      worker.stats.send_errors = worker.stats.send_errors + 1
      log_debug(handle, "batch not sent: " .. tostring(err))
    end
  end
end

-- Requests whose response never came (client gone) are sent without a response.
local function sweep(handle, now)
  local swept = worker:sweep(now)
  if not swept then return end
  for i = 1, #swept do
    local ok, err = worker:push(record.finish(swept[i], cfg, nil), now)
    if not ok then log_debug(handle, "record not encoded: " .. tostring(err)) end
  end
end

local function on_request(handle)
  local now = clock()
  sweep(handle, now)
  flush(handle, now)
  if not worker:sample() then return end
  local info = handle:streamInfo()
  local rec = record.request(handle, info, now)
  local token = worker:open(rec, now)
  if not token then return end
  -- SECURITY: the token is ours (hex), never request data: dynamicMetadata truncates
  -- strings at a zero byte and other filters can read it.
  info:dynamicMetadata():set(cfg.metadata_namespace, "t", token)
  record.read_body(handle, rec.req, cfg.max_request_body_bytes)
end

local function on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get(cfg.metadata_namespace)
  local rec = md and worker:claim(md.t)
  if rec then
    record.response(handle, rec, cfg)
    local now = clock()
    local ok, err = worker:push(record.finish(rec, cfg, now), now)
    if not ok then log_debug(handle, "record not encoded: " .. tostring(err)) end
  end
  flush(handle, clock())
end

local function disabled(handle)
  if config_error and not config_error_logged then
    config_error_logged = true
    pcall(handle.logErr, handle, "oob-node plugin disabled: " .. tostring(config_error))
  end
end

function _M.on_request(handle)
  if not worker then return disabled(handle) end
  local ok, err = pcall(on_request, handle)
  if not ok then fail(handle, err) end
end

function _M.on_response(handle)
  if not worker then return disabled(handle) end
  local ok, err = pcall(on_response, handle)
  if not ok then fail(handle, err) end
end

return _M
