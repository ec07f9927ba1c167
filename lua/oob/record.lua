-- oob.record: writes the v1 request record (README "Wire formats") from Envoy's handles.
--
-- Where it sits: oob_mirror.lua calls request() in envoy_on_request, read_body() while the
-- request body streams by, response() in envoy_on_response, then finish(), which returns
-- the record already msgpack-encoded; oob.batch buffers it. The plugin never sends id,
-- client_ip or peer_ip: the node assigns and resolves them (from meta.remote_address /
-- direct_remote_address, the TCP peer and the headers).
--
-- Fields are written into msgpack writers as Envoy hands them out, never built as Lua
-- tables first: every table and every extra pass over the headers costs Envoy CPU on each
-- request (see bench/envoy_overhead.py).
--
-- Bodies are read with bodyChunks(), never body(): body() buffers the whole body and makes
-- Envoy answer 413 above its buffer limit, so a passive plugin would break big uploads.
-- Only the first max_*_body_bytes are copied out of each body; the rest is only counted.

local msgpack = require("oob.msgpack")

local _M = { _VERSION = "0.1.0" }

local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local byte = string.byte
local find = string.find
local match = string.match
local sub = string.sub
local concat = table.concat
local min = math.min
local floor = math.floor
local writer = msgpack.writer
local put = msgpack.put
local put_str = msgpack.put_str
local put_bin = msgpack.put_bin
local put_int = msgpack.put_int
local put_float = msgpack.put_float
local put_bool = msgpack.put_bool

local COLON = 58 -- ":" starts Envoy's pseudo-headers
local PAIR = msgpack.array_header(2)

-- Every key, encoded once.
local K = {}
for _, key in ipairs({ "v", "ts", "source", "request_id", "method", "scheme", "host", "port",
                       "path", "query", "http_version", "headers", "body", "body_size",
                       "body_truncated", "response", "status", "meta", "remote_address",
                       "direct_remote_address", "route", "duration_ms" }) do
  K[key] = msgpack.encode(key)
end
local V_ONE, V_LUA = msgpack.encode(1), msgpack.encode("lua")

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

-- Write the regular headers of an Envoy header map into w as [name, value] pairs, in
-- Envoy's order with duplicates as separate pairs (Envoy itself folds a few, such as
-- x-forwarded-for, into one comma-joined value). Pseudo-headers (":path", ...) and
-- x-request-id go into `seen`. With `host`, ":authority" is also written as a "host" pair:
-- HTTP/1's Host became :authority in Envoy, and Envoy lists pseudo-headers first, where
-- HTTP/1 clients send Host, so header detectors see the same on both paths.
-- Returns the number of pairs written.
local function write_headers(map, w, seen, host)
  local n = 0
  for name, value in pairs(map) do
    if byte(name, 1) == COLON then
      seen[name] = value
      if host and name == ":authority" then
        put(w, PAIR); put_str(w, "host"); put_str(w, value)
        n = n + 1
      end
    else
      put(w, PAIR)
      put_str(w, name)
      put_str(w, value)
      n = n + 1
      if name == "x-request-id" or name == "content-length" then seen[name] = value end
    end
  end
  return n
end

local function kv_str(w, key, value)
  put(w, K[key])
  put_str(w, value)
end

local function kv_int(w, key, value)
  put(w, K[key])
  put_int(w, value)
end

-- cfg.static_meta encoded once per configuration: (fragment, count).
local static_cache = setmetatable({}, { __mode = "k" })
local function static_meta(cfg)
  local cached = static_cache[cfg]
  if not cached then
    local w, n = writer(), 0
    for k, v in pairs(cfg.static_meta) do
      put_str(w, k)
      put_str(w, v)
      n = n + 1
    end
    cached = { msgpack.result(w), n }
    static_cache[cfg] = cached
  end
  return cached[1], cached[2]
end

local VERSIONS = { ["HTTP/1.1"] = "1.1", ["HTTP/2"] = "2", ["HTTP/1.0"] = "1.0",
                   ["HTTP/3"] = "3" }

-- ------------------------------------------------------------------ request / response

-- Record layout in the writer: the request fields, then (finish) the bodies, response and
-- meta. The map header and the meta header sit in reserved slots, filled at finish().
local REQUEST_FIELDS = 12

-- The request part of a record, from envoy_on_request's handle and its streamInfo();
-- `now` in seconds. Returns the record state that read_body/response/finish complete.
function _M.request(handle, info, now)
  local w, seen = writer(), {}
  local map_slot = msgpack.reserve(w)
  put(w, K.headers)
  local headers_slot = msgpack.reserve(w)
  w[headers_slot] = msgpack.array_header(write_headers(handle:headers(), w, seen, true))
  local authority = seen[":authority"]
  local host, port = _M.split_authority(authority)
  local path, query = _M.split_path(seen[":path"])
  put(w, K.v); put(w, V_ONE)
  put(w, K.ts); put_float(w, now)
  put(w, K.source); put(w, V_LUA)
  kv_str(w, "request_id", seen["x-request-id"] or "")
  kv_str(w, "method", seen[":method"] or "")
  kv_str(w, "scheme", seen[":scheme"] or "")
  kv_str(w, "host", host)
  kv_int(w, "port", port)
  kv_str(w, "path", path)
  kv_str(w, "query", query)
  local protocol = info:protocol()
  kv_str(w, "http_version", VERSIONS[protocol] or _M.http_version(protocol))
  -- Envoy's handle objects die with their callback: what meta needs is read now.
  local route = info.routeName and info:routeName()  -- absent before Envoy 1.30
  return { w = w, map_slot = map_slot, t0 = now,
           remote = info:downstreamRemoteAddress(),
           direct = info:downstreamDirectRemoteAddress(),
           route = route ~= "" and route or nil,
           req = { parts = {}, kept = 0, size = 0 } }
end

-- Stream the body chunks of handle through acc = {parts, kept, size}, copying at most cap
-- bytes. Yields between chunks (Envoy resumes the coroutine as data arrives); the data
-- itself flows on untouched.
function _M.read_body(handle, acc, cap)
  local parts, kept, size = acc.parts, acc.kept, acc.size
  for chunk in handle:bodyChunks() do
    local len = chunk:length()
    size = size + len
    if kept < cap and len > 0 then
      local take = min(len, cap - kept)
      parts[#parts + 1] = chunk:getBytes(0, take)
      kept = kept + take
    end
    acc.kept, acc.size = kept, size
  end
  acc.kept, acc.size, acc.done = kept, size, true
end

-- The response part, from envoy_on_response's handle: status and headers are written now,
-- the body (capped) is read here and written by finish().
function _M.response(handle, rec, cfg)
  local w, seen = rec.w, {}
  put(w, K.response); msgpack.put_map(w, 5)
  put(w, K.headers)
  local headers_slot = msgpack.reserve(w)
  w[headers_slot] = msgpack.array_header(write_headers(handle:headers(), w, seen))
  local status = tonumber(seen[":status"]) or 0
  kv_int(w, "status", status)
  local acc = { parts = {}, kept = 0, size = 0 }
  rec.resp = acc
  if status == 101 then
    -- an upgraded stream (WebSocket): its "body" lasts as long as the connection; the record
    -- goes now, without it
    acc.done = true
  elseif cfg.capture_response_body then
    _M.read_body(handle, acc, cfg.max_response_body_bytes)
  else
    -- Not iterating the body saves Envoy the coroutine round trip per chunk (the costliest
    -- part of the plugin after the header maps): the size is Content-Length when known.
    acc.size = tonumber(seen["content-length"]) or 0
    acc.done = true
  end
end

-- body, body_size, body_truncated. A body still streaming when the record is closed (the
-- response came first) is partial: truncated, with the size seen so far.
local function write_body(w, acc)
  local body = concat(acc.parts)
  put(w, K.body); put_bin(w, body)
  kv_int(w, "body_size", acc.size)
  put(w, K.body_truncated); put_bool(w, acc.size > #body or not acc.done)
end

-- meta: the static labels, what Envoy knows about the stream, the duration.
local function write_meta(w, rec, cfg, now)
  put(w, K.meta)
  local slot = msgpack.reserve(w)
  local fragment, n = static_meta(cfg)
  put(w, fragment)
  kv_str(w, "remote_address", _M.strip_port(rec.remote))
  kv_str(w, "direct_remote_address", _M.strip_port(rec.direct))
  n = n + 2
  if rec.route then kv_str(w, "route", rec.route); n = n + 1 end
  if now then
    put(w, K.duration_ms); put_float(w, floor((now - rec.t0) * 1000000 + 0.5) / 1000)
    n = n + 1
  end
  w[slot] = msgpack.map_header(n)
end

-- Close the record: the request body, the response body, meta. Returns the encoded
-- record. `now` is nil for a request swept without a response (no duration then).
function _M.finish(rec, cfg, now)
  local w = rec.w
  if rec.resp then write_body(w, rec.resp) end  -- closes the response map
  write_body(w, rec.req)
  write_meta(w, rec, cfg, now)
  w[rec.map_slot] = msgpack.map_header(REQUEST_FIELDS + 4 + (rec.resp and 1 or 0))
  return msgpack.result(w)
end

return _M
