-- oob.config: the plugin's one configuration table, with defaults and validation.
--
-- Where it sits: the Envoy Lua filter's inline code (rendered by the Helm chart or the test
-- configs) calls require("oob_mirror").configure({...}); that goes through _M.new below once
-- per worker Lua state. Every option has a default, a type, bounds and a description
-- (Kong schema style); unknown keys are an error so that typos do not pass silently.

local _M = { _VERSION = "0.1.0" }

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local floor = math.floor
local sort = table.sort

-- name -> { type, default, min, max, description }
local SCHEMA = {
  cluster = { "string", "oob_node", nil, nil,
    "Envoy cluster of the node's batch listener (POST /v1/batch)" },
  authority = { "string", "oob-node", nil, nil, ":authority of the batch POST" },
  path = { "string", "/v1/batch", nil, nil, "path of the batch POST" },
  token = { "string", "", nil, nil,
    "bearer token of the batch listener (OOB_BATCH_TOKEN of the node)" },
  max_request_body_bytes = { "integer", 65536, 0, 64 * 1048576,
    "request body bytes kept per record; the rest is counted in body_size, never buffered" },
  max_response_body_bytes = { "integer", 65536, 0, 64 * 1048576,
    "response body bytes kept per record" },
  capture_response_body = { "boolean", true, nil, nil,
    "keep response bodies (status and headers are always kept); off, the response body is "
      .. "not read at all and its size is Content-Length" },
  batch_size = { "integer", 50, 1, 10000,
    "records per POST; 1 sends every record at once" },
  batch_age_ms = { "integer", 1000, 0, 3600000,
    "a batch older than this is sent by the next request or response on the worker" },
  max_batch_bytes = { "integer", 4 * 1048576, 1024, 512 * 1048576,
    "batch bytes that trigger a send; a batch stays under it unless one record is bigger "
      .. "(keep under the node's max_batch_bytes)" },
  max_buffered_records = { "integer", 1000, 1, 1000000,
    "records buffered per worker; beyond it the oldest are dropped and counted" },
  max_buffered_bytes = { "integer", 16 * 1048576, 65536, 1024 * 1048576,
    "bytes of encoded records buffered per worker; beyond it the oldest are dropped" },
  sample_rate = { "number", 1.0, 0, 1, "fraction of requests captured (0..1)" },
  timeout_ms = { "integer", 5000, 1, 600000,
    "timeout of the batch POST (it never delays a request: the call is asynchronous)" },
  state_ttl_ms = { "integer", 300000, 1000, 86400000,
    "per-request state older than this (response never seen) is swept" },
  max_pending_requests = { "integer", 10000, 1, 10000000,
    "requests in flight tracked per worker; beyond it new requests are not captured" },
  sweep_interval_ms = { "integer", 1000, 0, 3600000, "how often abandoned state is swept" },
  metadata_namespace = { "string", "oob.mirror", nil, nil,
    "dynamicMetadata namespace of the per-request token (used when a request cannot be "
      .. "found by x-request-id)" },
  static_meta = { "table", {}, nil, nil,
    "string map copied into every record's meta (e.g. cluster, namespace, workload)" },
}

local function is_integer(v)
  return type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

local function check(name, spec, v)
  local kind, _, min, max = spec[1], spec[2], spec[3], spec[4]
  if kind == "integer" then
    if not is_integer(v) then return nil, name .. ": expected an integer, got " .. tostring(v) end
  elseif type(v) ~= kind then
    return nil, name .. ": expected a " .. kind .. ", got " .. type(v)
  end
  if kind == "number" and v ~= v then return nil, name .. ": expected a number, got nan" end
  if kind == "table" then
    for k, x in pairs(v) do
      if type(k) ~= "string" or type(x) ~= "string" then
        return nil, name .. ": expected a map of strings to strings"
      end
    end
  end
  if min and v < min then return nil, name .. ": must be >= " .. min .. ", got " .. v end
  if max and v > max then return nil, name .. ": must be <= " .. max .. ", got " .. v end
  return true
end

-- The effective config: defaults overlaid with opts. Returns cfg, or nil and an error that
-- names the option.
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    return nil, "config: expected a table, got " .. type(opts)
  end
  opts = opts or {}
  for name in pairs(opts) do
    if not SCHEMA[name] then return nil, tostring(name) .. ": unknown option" end
  end
  local cfg = {}
  for name, spec in pairs(SCHEMA) do
    local v = opts[name]
    if v == nil then v = spec[2] end
    local ok, err = check(name, spec, v)
    if not ok then return nil, err end
    cfg[name] = v
  end
  if cfg.cluster == "" then return nil, "cluster: must not be empty" end
  if cfg.path:sub(1, 1) ~= "/" then return nil, "path: must start with /" end
  return cfg
end

-- { {name, type, default, description}, ... } sorted by name (for docs and tests).
function _M.describe()
  local rows = {}
  for name, spec in pairs(SCHEMA) do
    rows[#rows + 1] = { name, spec[1], spec[2], spec[5] }
  end
  sort(rows, function(a, b) return a[1] < b[1] end)
  return rows
end

function _M.names()
  local names = {}
  for _, row in ipairs(_M.describe()) do names[#names + 1] = row[1] end
  return names
end

return _M
