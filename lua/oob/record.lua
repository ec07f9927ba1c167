-- oob.record: the v1 request record (README "Wire formats") from Envoy's handles.
--
-- Where it sits: oob_mirror.lua calls request() in envoy_on_request (then read_body() while
-- the request body streams by) and response() in envoy_on_response; the record then waits
-- in oob.batch's buffer, which calls encode_into() when the batch is sent. The plugin never
-- sends id, client_ip or peer_ip: the node assigns and resolves them (from
-- meta.remote_address / direct_remote_address, the TCP peer and the headers).
--
-- Cost model (bench/envoy_overhead.py): the capture runs on every request inside Envoy, in
-- LuaJIT's interpreter (Envoy's handle methods are C functions, which end every JIT trace:
-- the capture functions have the JIT off), with cold CPU caches (Envoy's own request
-- processing ran since the last callback). So the callbacks only copy what Envoy hands out
-- into a pooled table ("rec": header names and values as they come, a few fields), and the
-- msgpack work happens in encode_into(), at flush time, once per record in a loop over the
-- batch: there the JIT compiles it, and code and lookup tables stay hot. It writes pieces
-- that oob.batch joins once per batch:
--   * whatever repeats across requests is encoded once and looked up: header names with
--     their [name, value] pair header, method, scheme, authority (host + port), protocol,
--     route, status, addresses, string length prefixes (bounded per-worker caches);
--   * the texts of a record (header values, path, query) are checked for "str or bin" in
--     one C scan of their concatenation; only when that finds a non-ASCII or zero byte is
--     each of them checked on its own.
-- Bodies are read only when there can be one (see request() and response_body()): every
-- bodyChunks() chunk is a coroutine yield and resume in Envoy.
--
-- Bodies are read with bodyChunks(), never body(): body() buffers the whole body and makes
-- Envoy answer 413 above its buffer limit, so a passive plugin would break big uploads.
-- Only the first max_*_body_bytes are copied out of each body; the rest is only counted.

local msgpack = require("oob.msgpack")

local _M = { _VERSION = "0.3.0" }


local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local loadstring = loadstring or load
local find = string.find
local match = string.match
local sub = string.sub
local byte = string.byte
local rep = string.rep
local concat = table.concat
local floor = math.floor
local enc = msgpack.encode
local STRP = msgpack.STR_PREFIX
local BINP = msgpack.BIN_PREFIX
local str_prefix = msgpack.str_prefix
local bin_prefix = msgpack.bin_prefix
local number = msgpack.number
local float64 = msgpack.float64
local ascii = msgpack.ascii
local is_text = msgpack.is_text
local text = msgpack.text

local K = {}  -- every key, encoded once
for _, key in ipairs({ "v", "ts", "source", "request_id", "method", "scheme", "host", "port",
                       "path", "query", "http_version", "headers", "body", "body_size",
                       "body_truncated", "response", "status", "meta", "remote_address",
                       "direct_remote_address", "route", "duration_ms" }) do
  K[key] = enc(key)
end

local PAIR = msgpack.array_header(2)
local HOST_PAIR = PAIR .. enc("host")  -- HTTP/1's Host became :authority in Envoy
local CONSTANT_FIELDS = K.v .. enc(1) .. K.source .. enc("lua")
local RESPONSE = K.response .. msgpack.map_header(5)
local TRUE, FALSE = enc(true), enc(false)
-- 16 fields (v, ts, source, request_id, method, scheme, host, port, path, query,
-- http_version, headers, body, body_size, body_truncated, meta), 17 with response
local MAP_REQUEST, MAP_EXCHANGE = msgpack.map_header(16), msgpack.map_header(17)
-- encoded bytes of a record besides its header names, values and bodies (an estimate for
-- the buffer's byte bounds: oob.batch measures the encoded records exactly when it sends)
local RECORD_OVERHEAD, PAIR_OVERHEAD = 320, 6

-- ------------------------------------------------------------------ helpers

-- "/a/b?x=1" -> "/a/b", "x=1" (query "" when absent; the "?" is not kept).
function _M.split_path(p)
  if not p then return "", "" end
  local q = find(p, "?", 1, true)
  if not q then return p, "" end
  return sub(p, 1, q - 1), sub(p, q + 1)
end

-- "shop.example:8080" -> "shop.example", 8080; "[2001:db8::1]:443" -> "2001:db8::1", 443;
-- no port -> host, 0.
function _M.split_authority(a)
  if not a or a == "" then return "", 0 end
  local v6, v6port = match(a, "^%[(.-)%]:?(%d*)$")
  if v6 then return v6, tonumber(v6port) or 0 end
  local host, port = match(a, "^(.*):(%d+)$")
  if host then return host, tonumber(port) or 0 end
  return a, 0
end

-- "1.2.3.4:5678" -> "1.2.3.4"; "[::1]:80" -> "::1"; anything else unchanged.
function _M.strip_port(addr)
  if not addr then return "" end
  local v6 = match(addr, "^%[(.-)%]:%d+$")
  if v6 then return v6 end
  local v4 = match(addr, "^([%d%.]+):%d+$")
  return v4 or addr
end

-- "HTTP/1.1" -> "1.1", "HTTP/2" -> "2" (the form the mirror listener records).
function _M.http_version(protocol)
  if not protocol then return "" end
  return match(protocol, "^HTTP/(.+)$") or protocol
end

-- ------------------------------------------------------------------ per-worker caches

-- A table of key -> encoded piece, filled by make(key) on a miss and emptied when it holds
-- `limit` keys: the keys come from requests (attackers choose them), so it never grows
-- beyond that, and the common values stay hot.
local function bounded(limit, make)
  local map, n = {}, 0
  local function miss(key)
    local value = make(key)
    if n >= limit then
      for k in pairs(map) do map[k] = nil end
      n = 0
    end
    map[key] = value
    n = n + 1
    return value
  end
  return map, miss
end

-- header name -> [name, value] pair header + the name; true for pseudo-headers (":path")
local NAMES, name_miss = bounded(1024, function(name)
  if byte(name, 1) == 58 then return true end       -- ":"
  return PAIR .. text(name)
end)
local METHODS, method_miss = bounded(64, function(m) return K.method .. text(m) end)
local SCHEMES, scheme_miss = bounded(16, function(s) return K.scheme .. text(s) end)
-- authority -> host and port fields
local AUTHORITIES, authority_miss = bounded(256, function(a)
  local host, port = _M.split_authority(a)
  return K.host .. text(host) .. K.port .. number(port)
end)
local VERSIONS = { ["HTTP/1.1"] = "1.1", ["HTTP/2"] = "2", ["HTTP/1.0"] = "1.0",
                   ["HTTP/3"] = "3" }
local PROTOCOLS, protocol_miss = bounded(16, function(p)
  return K.http_version .. text(VERSIONS[p] or _M.http_version(p))
end)
local ROUTES, route_miss = bounded(256, function(r)
  if r == "" then return "" end
  return K.route .. text(r)
end)
local REMOTES, remote_miss = bounded(1024, function(a)
  return K.remote_address .. text(_M.strip_port(a))
end)
local DIRECTS, direct_miss = bounded(256, function(a)
  return K.direct_remote_address .. text(_M.strip_port(a))
end)
local STATUSES, status_miss = bounded(128, function(s) return K.status .. number(s) end)
local INTS, int_miss = bounded(1024, number)  -- body sizes repeat
local ARRAYS = {}
for n = 0, 255 do ARRAYS[n] = msgpack.array_header(n) end
local METAS = {}
for n = 0, 255 do METAS[n] = K.meta .. msgpack.map_header(n) end

-- ------------------------------------------------------------------ captured records

-- A captured record: the header names and values as Envoy listed them, request pairs in
-- [1..nq], response pairs in [nq + 1..ns], and these fields:
--   t0, t1   request and response times (seconds; t1 false: swept, no response)
--   remote, direct, route, protocol    from Envoy's stream info
--   id       x-request-id or false     head    a HEAD request (no response body)
--   acc      request body: false (none), STREAMING (expected, nothing read yet) or
--            {kept, size, done, [1..] parts} (being read, or read)
--   gen      bumped each time the table goes back to the pool (see read_body)
--   status   response status (0: unknown)   body, body_size: response body kept, size
--   resp     a response was captured         size    estimated encoded bytes
--   dup      x-request-id shared with another request in flight (oob.batch)
-- A copy of a constant template (one step, no growth) or a table from the pool: a record
-- table is the largest allocation per request, and the garbage collector's work grows
-- with what is allocated. Only pairs up to ns are read, so what a pooled table kept beyond
-- does no harm; its fields are reset, and its slots emptied when it held many or large
-- ones, so that the pool keeps at most POOL_MAX * ~POOL_KEEP_BYTES of old strings alive.
local TEMPLATE_SLOTS = 96
local POOL_MAX, POOL_KEEP_BYTES = 64, 32768
local new_rec = loadstring("return function() return { " .. rep("false, ", TEMPLATE_SLOTS)
  .. "nq = 0, ns = 0, t0 = 0, t1 = false, remote = '', direct = '', route = '', "
  .. "protocol = '', id = false, head = false, acc = false, status = 0, body = '', "
  .. "body_size = 0, resp = false, size = 0, dup = false, gen = 0 } end")()
-- rec.acc of a request body that has not sent a byte yet (never written to)
local STREAMING = { kept = 0, size = 0, done = false }

local pool, pooled = {}, 0

local function take_rec()
  if pooled == 0 then return new_rec() end
  local rec = pool[pooled]
  pool[pooled] = nil
  pooled = pooled - 1
  return rec
end

-- Return rec to the pool (after encoding, or when it is dropped).
function _M.recycle(rec)
  rec.gen = rec.gen + 1
  if pooled >= POOL_MAX then return end
  if rec.ns > 2 * TEMPLATE_SLOTS or rec.size > POOL_KEEP_BYTES then
    for k = rec.ns, 1, -1 do rec[k] = false end
  end
  rec.t1, rec.id, rec.head, rec.acc, rec.body, rec.resp, rec.dup = false, false, false,
    false, "", false, false
  pooled = pooled + 1
  pool[pooled] = rec
end

-- The request part, from envoy_on_request's handle; `now` in seconds. Returns the record,
-- its x-request-id (nil when absent) and whether a body can follow: not with
-- Content-Length 0. Without Content-Length it can (Envoy takes Transfer-Encoding out of
-- the header map of a chunked HTTP/1 request), and read_body() then costs nothing more
-- than two calls when there is none: bodyChunks() ends at once, without a yield, when the
-- headers ended the stream. A header value that is not a string raises here (#value).
function _M.request(handle, now)
  local info = handle:streamInfo()
  local rec = take_rec()
  rec.t0 = now
  -- Envoy's handles die with their callback: what meta needs is read now
  rec.remote = info:downstreamRemoteAddress()
  rec.direct = info:downstreamDirectRemoteAddress()
  local route_name = info.routeName  -- absent before Envoy 1.30
  rec.route = route_name and route_name(info) or ""
  local i, size, rid, method, length = 0, RECORD_OVERHEAD
  for name, value in pairs(handle:headers()) do
    rec[i + 1], rec[i + 2] = name, value
    i = i + 2
    size = size + #name + #value + PAIR_OVERHEAD
    if name == "x-request-id" then rid = value
    elseif name == ":method" then method = value
    elseif name == "content-length" then length = value end
  end
  rec.nq, rec.ns, rec.size, rec.protocol = i, i, size, info:protocol()
  rec.id, rec.head = rid or false, method == "HEAD"
  return rec, rid, length ~= "0"
end

-- Stream the request body through rec.acc, copying at most cap bytes. Yields between
-- chunks (Envoy resumes the coroutine as data arrives); the data itself flows on untouched.
-- The record may be sent (its response came first) and its table reused by another request
-- while this waits: from the first chunk on, only its own acc table is written, and rec
-- only while rec.gen says it is still the same record.
function _M.read_body(handle, rec, cap)
  local next_chunk = handle:bodyChunks()
  local gen = rec.gen
  rec.acc = STREAMING
  local chunk = next_chunk()
  if rec.gen ~= gen then return end
  if chunk == nil then  -- no body
    rec.acc = false
    return
  end
  local acc = { kept = 0, size = 0, done = false }
  rec.acc = acc
  local kept, size = 0, 0
  repeat
    local len = chunk:length()
    size = size + len
    if kept < cap and len > 0 then
      local take = cap - kept
      if len < take then take = len end
      acc[#acc + 1] = chunk:getBytes(0, take)
      kept = kept + take
    end
    acc.kept, acc.size = kept, size
    chunk = next_chunk()
  until chunk == nil
  acc.done = true
end

-- The response body (at most cap bytes) and its size: read_body with locals, since the
-- response is complete when this callback ends.
local function read_response_body(handle, cap)
  local first, parts, size = "", nil, 0
  for chunk in handle:bodyChunks() do
    local len = chunk:length()
    local take = cap - size
    if take > 0 and len > 0 then
      if len < take then take = len end
      if size == 0 then
        first = chunk:getBytes(0, take)
      else
        parts = parts or { first }
        parts[#parts + 1] = chunk:getBytes(0, take)
      end
    end
    size = size + len
  end
  if parts then first = concat(parts) end
  return first, size
end

-- How the response body is taken: "skip" (none can follow: HEAD, 1xx, 204, 304,
-- Content-Length 0; 101 is an upgraded stream, e.g. WebSocket, whose "body" lasts as long
-- as the connection), "length" (not captured: its size is Content-Length), "read".
local function response_body(ctx, rec, status, length)
  if status < 200 or status == 204 or status == 304 or rec.head or length == "0" then
    return "skip"
  end
  if not ctx.response_body then return "length" end
  return "read"
end

-- The response part, from envoy_on_response's handle: status, headers and (capped) body.
-- Not capturing the body saves Envoy the coroutine round trip per chunk.
function _M.response(ctx, handle, rec)
  local i, size, status, length = rec.nq, rec.size, nil, nil
  for name, value in pairs(handle:headers()) do
    rec[i + 1], rec[i + 2] = name, value
    i = i + 2
    size = size + #name + #value + PAIR_OVERHEAD
    if name == ":status" then status = value
    elseif name == "content-length" then length = value end
  end
  local code = tonumber(status) or 0
  rec.ns, rec.status, rec.resp = i, code, true
  local how = response_body(ctx, rec, code, length)
  if how == "read" then
    local body, body_size = read_response_body(handle, ctx.response_cap)
    rec.body, rec.body_size, size = body, body_size, size + #body
  else
    rec.body, rec.body_size = "", how == "length" and tonumber(length) or 0
  end
  rec.size = size
end

-- Close the capture: `now` is the response time, nil for a request swept without one.
-- Returns the estimated encoded size (the request body may still grow up to its cap).
function _M.close(ctx, rec, now)
  rec.t1 = now or false
  local acc, size = rec.acc, rec.size
  if acc then size = size + (acc.done and acc.kept or ctx.request_cap) end
  rec.size = size
  return size
end

-- The capture functions call Envoy's handle methods (C functions, which end JIT traces):
-- interpreted, see oob_mirror.lua. encode_into() below is plain Lua running in a loop over a
-- batch: that the JIT compiles (measured 2-3x faster than interpreted).
if jit then
  jit.off(_M.request)
  jit.off(_M.response)
  jit.off(_M.read_body)
  jit.off(read_response_body)
end

-- ------------------------------------------------------------------ encoding

-- The encoded form of a text as (prefix, text): str, or bin when `checked` and s is not
-- valid UTF-8 or has a zero byte.
local function prefix_of(s, checked)
  local n = #s
  if checked and not is_text(s) then return bin_prefix(n) end
  return STRP[n] or str_prefix(n)
end

-- Header pairs rec[from + 1..to] into the pieces W from slot w + 1. Returns the new w, the number of
-- pairs and (request side) the pseudo-headers. `checked`: see encode_into().
local function write_headers(W, rec, from, to, w, checked)
  local nh, authority, path, method, scheme = 0
  for k = from + 1, to, 2 do
    local name, value = rec[k], rec[k + 1]
    local e = NAMES[name] or name_miss(name)
    if e ~= true then
      local n = #value
      W[w + 1], W[w + 2], W[w + 3] = e, STRP[n] or str_prefix(n), value
      if checked then W[w + 2] = prefix_of(value, true) end
      w = w + 3; nh = nh + 1
    elseif name == ":authority" then
      -- a "host" pair where Envoy lists it (first), as HTTP/1 clients send it
      authority = value
      W[w + 1], W[w + 2], W[w + 3] = HOST_PAIR, prefix_of(value, checked), value
      w = w + 3; nh = nh + 1
    elseif name == ":path" then path = value
    elseif name == ":method" then method = value
    elseif name == ":scheme" then scheme = value end
  end
  return w, nh, authority, path, method, scheme
end

-- body, body_size, body_truncated into W from slot w + 1. Returns the new w.
local function write_body(W, w, body, size, truncated)
  local n = #body
  W[w + 1], W[w + 2], W[w + 3] = K.body, BINP[n] or bin_prefix(n), body
  W[w + 4], W[w + 5] = K.body_size, INTS[size] or int_miss(size)
  W[w + 6], W[w + 7] = K.body_truncated, truncated and TRUE or FALSE
  return w + 7
end

-- The bytes kept in acc (its parts joined).
local function kept(acc)
  local n = #acc
  if n == 1 then return acc[1] end
  if n == 0 then return "" end
  return concat(acc)
end

-- meta: static labels, addresses, route, duration into W from slot w + 1. Returns the
-- new w.
local function write_meta(W, ctx, rec, w)
  local remote, direct, route = rec.remote, rec.direct, rec.route
  W[w + 2] = ctx.static
  W[w + 3] = REMOTES[remote] or remote_miss(remote)
  W[w + 4] = DIRECTS[direct] or direct_miss(direct)
  W[w + 5] = ROUTES[route] or route_miss(route)
  local nm = ctx.static_n + (route == "" and 2 or 3)
  local t1 = rec.t1
  if t1 then
    W[w + 6], W[w + 7] = K.duration_ms, float64(floor((t1 - rec.t0) * 1000000 + 0.5) / 1000)
    nm = nm + 1
  else
    W[w + 6], W[w + 7] = "", ""
  end
  W[w + 1] = METAS[nm] or K.meta .. msgpack.map_header(nm)
  return w + 7
end

-- The record msgpack-encoded, as pieces W[w0 + 1..w] (oob.batch joins a whole batch at
-- once, so a record is never a string of its own). Returns w. A request body still
-- streaming when its response was seen is what was read by now: truncated, with the size
-- seen so far.
-- Texts: one C scan of all the record's header names and values joined says whether they
-- are plain ASCII (the usual case), and then all are str; otherwise (`checked`) each text
-- is checked on its own and written as bin when it is not valid UTF-8 or has a zero byte.
-- (Names, addresses, route and the like come from caches that checked them once.)
function _M.encode_into(ctx, rec, W, w0)
  local checked = rec.ns > 0 and not ascii(concat(rec, "", 1, rec.ns))
  local w = write_meta(W, ctx, rec, w0 + 1)
  W[w + 1] = K.headers
  local slot = w + 2
  local nh, authority, path, method, scheme
  w, nh, authority, path, method, scheme = write_headers(W, rec, 0, rec.nq, slot, checked)
  W[slot] = ARRAYS[nh] or msgpack.array_header(nh)
  method, scheme, authority, path = method or "", scheme or "", authority or "", path or ""
  local query = ""
  local q = find(path, "?", 1, true)
  if q then path, query = sub(path, 1, q - 1), sub(path, q + 1) end
  local id, protocol = rec.id or "", rec.protocol
  W[w + 1], W[w + 2], W[w + 3] = CONSTANT_FIELDS, K.ts, float64(rec.t0)
  W[w + 4], W[w + 5], W[w + 6] = K.request_id, prefix_of(id, checked), id
  W[w + 7] = METHODS[method] or method_miss(method)
  W[w + 8] = SCHEMES[scheme] or scheme_miss(scheme)
  W[w + 9] = AUTHORITIES[authority] or authority_miss(authority)
  W[w + 10], W[w + 11], W[w + 12] = K.path, prefix_of(path, checked), path
  W[w + 13], W[w + 14], W[w + 15] = K.query, prefix_of(query, checked), query
  W[w + 16] = PROTOCOLS[protocol] or protocol_miss(protocol)
  w = w + 16
  local acc = rec.acc
  if acc then
    w = write_body(W, w, kept(acc), acc.size, acc.size > acc.kept or not acc.done)
  else
    w = write_body(W, w, "", 0, false)
  end
  if rec.resp then
    W[w + 1], W[w + 2] = RESPONSE, K.headers
    slot = w + 3
    w, nh = write_headers(W, rec, rec.nq, rec.ns, slot, checked)
    W[slot] = ARRAYS[nh] or msgpack.array_header(nh)
    local status = rec.status
    W[w + 1] = STATUSES[status] or status_miss(status)
    w = write_body(W, w + 1, rec.body, rec.body_size, rec.body_size > #rec.body)
  end
  W[w0 + 1] = rec.resp and MAP_EXCHANGE or MAP_REQUEST
  return w
end

-- The record msgpack-encoded, as one string.
function _M.encode(ctx, rec)
  local W = {}
  return concat(W, "", 1, _M.encode_into(ctx, rec, W, 0))
end

-- Per-worker encoding context of a configuration: static meta and body caps.
function _M.context(cfg)
  local parts, n = {}, 0
  for k, v in pairs(cfg.static_meta) do
    parts[#parts + 1] = text(k) .. text(v)
    n = n + 1
  end
  return { static = concat(parts), static_n = n,
           request_cap = cfg.max_request_body_bytes,
           response_cap = cfg.max_response_body_bytes,
           response_body = cfg.capture_response_body }
end

return _M
