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

local _M = { _VERSION = "0.3.0" }

-- Interpreted, never JIT-compiled: every handle method is a C function, which ends a LuaJIT
-- trace, so loops over headers and body chunks made the JIT record and abort traces again
-- and again (bench/envoy_overhead.py: ~15% more Envoy CPU per request with the JIT on).
-- (true, true): this module's functions and their inner functions; oob.record does the same
-- for its capture functions and leaves its encoder (plain Lua, run in a loop over a batch)
-- to the JIT. Other Lua code in the same state keeps its JIT.
if jit then jit.off(true, true) end

local pcall = pcall
local tostring = tostring
local clock = batch.clock

local cfg, worker, ctx, config_error, config_error_logged
-- Whether envoy_on_response can read the request headers (handle:requestHeaders(), in
-- Envoy 1.40; older versions lack it): then requests are tracked by x-request-id, with no
-- token set and read back through dynamicMetadata. Found out on the first request.
local by_request_id

-- Set up this worker's plugin. Returns true, or nil and an error naming the option: the
-- plugin then stays disabled (requests pass untouched) and logs the error once per worker,
-- rather than making Envoy (or Istio's whole listener update) reject the configuration.
function _M.configure(opts)
  local c, err = config.new(opts)
  if not c then
    cfg, worker, ctx, config_error, config_error_logged = nil, nil, nil, err, false
    return nil, err
  end
  local context = record.context(c)
  local function encode(rec, pieces, w) return record.encode_into(context, rec, pieces, w) end
  cfg, worker, ctx, config_error = c, batch.new(c, encode, record.recycle), context, nil
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
-- The batch's records are encoded here (oob.batch take()), in one loop.
local function flush(handle, now)
  while worker:due(now) do
    local body, n = worker:take()
    if worker.last_error then
      log_debug(handle, "record not encoded: " .. tostring(worker.last_error))
      worker.last_error = nil
    end
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

-- The record goes to the buffer as captured; `at` is its response time (nil: swept).
local function push(handle, rec, at, now)
  local ok, err = worker:push(rec, record.close(ctx, rec, at), now)
  if not ok then log_debug(handle, "record not buffered: " .. tostring(err)) end
end

-- Requests whose response never came (client gone) are sent without a response.
local function sweep(handle, now)
  local swept = worker:sweep(now)
  if not swept then return end
  for i = 1, #swept do push(handle, swept[i], nil, now) end
end

local function on_request(handle)
  local now = clock()
  if (now - worker.last_sweep) * 1000 >= cfg.sweep_interval_ms then sweep(handle, now) end
  if worker.tail >= worker.head then flush(handle, now) end
  if cfg.sample_rate < 1 and not worker:sample() then return end
  if worker.pending >= cfg.max_pending_requests then
    worker.stats.skipped = worker.stats.skipped + 1
    return
  end
  if by_request_id == nil then by_request_id = handle.requestHeaders ~= nil end
  local rec, rid, body = record.request(handle, now)
  local token = worker:open(rec, by_request_id and rid or nil)
  if token then
    -- SECURITY: the token is ours (hex), never request data: dynamicMetadata truncates
    -- strings at a zero byte and other filters can read it.
    handle:streamInfo():dynamicMetadata():set(cfg.metadata_namespace, "t", token)
  end
  if body and token ~= false then record.read_body(handle, rec, ctx.request_cap) end
end

local function claim_by_token(handle)
  local md = handle:streamInfo():dynamicMetadata():get(cfg.metadata_namespace)
  return md and worker:claim(md.t)
end

-- The record of this response's request: by x-request-id, or by the token in
-- dynamicMetadata when the request had to get one (see oob.batch open()).
local function claim(handle)
  if not by_request_id then return claim_by_token(handle) end
  local rid = handle:requestHeaders():get("x-request-id")
  local rec
  if rid and not worker.dups[rid] then rec = worker:claim_rid(rid) end
  if rec == nil and worker.tokens > 0 then rec = claim_by_token(handle) end
  if rec == nil and rid then rec = worker:claim_rid(rid) end
  return rec
end

local function on_response(handle)
  local rec = claim(handle)
  if rec then
    record.response(ctx, handle, rec)
    local now = clock()
    push(handle, rec, now, now)
    flush(handle, now)
  elseif worker.tail >= worker.head then
    flush(handle, clock())
  end
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
