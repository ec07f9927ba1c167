-- A fake of the parts of Envoy's Lua handle API the plugin uses, for the unit tests.
-- luacheck: ignore 212/self
--
-- Envoy's LuaJIT is built with Lua 5.2 compatibility, so pairs() honours __pairs on its
-- header maps; Debian's luajit is not, so this file installs a pairs() that does, before the
-- plugin modules are loaded (they cache pairs in a local).

local M = {}

local raw_pairs = pairs
function pairs(t) -- luacheck: ignore (global on purpose, see above)
  local mt = getmetatable(t)
  if mt and mt.__pairs then return mt.__pairs(t) end
  return raw_pairs(t)
end

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../../lua/?.lua;" .. package.path

-- A fake clock the plugin reads through oob.batch.clock.
M.now = 1700000000.0
local batch = require("oob.batch")
batch.clock = function() return M.now end

M.calls = {}   -- every httpCall: { cluster, headers, body, timeout, async }
M.logs = {}    -- { level, message }

local function header_map(list)
  local map = { list = list }
  function map:get(name)
    for _, kv in ipairs(self.list) do
      if kv[1] == name then return kv[2] end
    end
    return nil
  end
  return setmetatable(map, {
    __pairs = function(m)
      local i = 0
      return function()
        i = i + 1
        local kv = m.list[i]
        if kv then return kv[1], kv[2] end
      end
    end,
  })
end

local function chunk(data)
  return {
    length = function() return #data end,
    getBytes = function(_, index, length) return data:sub(index + 1, index + length) end,
  }
end

-- opts.yield: yield the running coroutine before each chunk (Envoy resumes it as data
-- arrives), so tests can interleave the request and response callbacks.
local function body_chunks(chunks, yield)
  return function()
    local i = 0
    return function()
      i = i + 1
      if chunks[i] == nil then return nil end
      if yield then coroutine.yield("chunk") end
      return chunk(chunks[i])
    end
  end
end

local function stream_info(stream)
  local md = stream.metadata
  local dynamic = {
    get = function(_, ns) return md[ns] end,
    set = function(_, ns, k, v)
      md[ns] = md[ns] or {}
      md[ns][k] = v
    end,
  }
  return {
    dynamicMetadata = function() return dynamic end,
    downstreamRemoteAddress = function() return stream.remote or "203.0.113.7:41000" end,
    downstreamDirectRemoteAddress = function() return stream.direct or "127.0.0.1:41000" end,
    protocol = function() return stream.protocol or "HTTP/1.1" end,
    routeName = function() return stream.route or "demo" end,
  }
end

local function handle(stream, headers, chunks, request_list)
  local h = {}
  local map = header_map(headers)
  local request_map = request_list and header_map(request_list)
  local info = stream_info(stream)
  function h:headers() return map end
  -- Envoy >= 1.32: the request headers from envoy_on_response (stream.old_envoy: absent)
  if not stream.old_envoy then
    function h:requestHeaders() return request_map or map end
  end
  h.bodyChunks = body_chunks(chunks or {}, stream.yield)
  function h:streamInfo() return info end
  function h:httpCall(cluster, hdrs, body, timeout, async)
    if stream.http_call_error then error(stream.http_call_error) end
    M.calls[#M.calls + 1] = { cluster = cluster, headers = hdrs, body = body,
                              timeout = timeout, async = async }
    return nil, nil
  end
  function h:logDebug(msg) M.logs[#M.logs + 1] = { "debug", msg } end
  function h:logErr(msg) M.logs[#M.logs + 1] = { "err", msg } end
  for name, fn in pairs(stream.override or {}) do h[name] = fn end
  return h
end

-- A stream: s.request / s.response are the handles of envoy_on_request / on_response.
-- opts: method, path, authority, headers ({{name, value}}), body ({chunks}), status,
-- response_headers, response_body ({chunks}), remote, direct, protocol, route, yield,
-- override (handle methods to replace, e.g. to make them raise), http_call_error,
-- old_envoy (no requestHeaders(): the plugin links request and response by token),
-- unframed (a body without the content-length the fake adds otherwise: a chunked request,
-- whose Transfer-Encoding Envoy removes from the header map).
function M.stream(opts)
  local s = { metadata = {} }
  for k, v in pairs(opts) do s[k] = v end
  local req = {
    { ":authority", opts.authority or "shop.example:8080" },
    { ":path", opts.path or "/" },
    { ":method", opts.method or "GET" },
    { ":scheme", opts.scheme or "http" },
  }
  local framed = false
  for _, kv in ipairs(opts.headers or {}) do
    req[#req + 1] = kv
    framed = framed or kv[1] == "content-length" or kv[1] == "transfer-encoding"
  end
  if opts.body and not framed and not opts.unframed then
    -- what an HTTP/1 client sends with a body (unframed: a chunked one, as Envoy shows it)
    local size = 0
    for _, c in ipairs(opts.body) do size = size + #c end
    req[#req + 1] = { "content-length", tostring(size) }
  end
  local resp = { { ":status", tostring(opts.status or 200) } }
  for _, kv in ipairs(opts.response_headers or {}) do resp[#resp + 1] = kv end
  s.request = handle(s, req, opts.body)
  s.response = handle(s, resp, opts.response_body, req)
  return s
end

-- Run one full request/response through the plugin.
function M.exchange(plugin, opts)
  local s = M.stream(opts)
  plugin.on_request(s.request)
  plugin.on_response(s.response)
  return s
end

-- Print a value as hex msgpack on stdout: the Python side decodes it.
function M.emit(value)
  local msgpack = require("oob.msgpack")
  local data = assert(msgpack.encode(value))
  io.write((data:gsub(".", function(c) return string.format("%02x", c:byte()) end)))
  io.write("\n")
end

return M
