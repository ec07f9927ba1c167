-- Scenarios of the plugin run against the fake Envoy handle. Usage: luajit scenarios.lua NAME
-- Prints one hex msgpack line: { result = ..., calls = {...}, stats = {...}, logs = {...} }.
-- The Python tests (test_lua_plugin.py) decode it and check the behaviour.

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local fake = require("fake_envoy")
local msgpack = require("oob.msgpack")
local plugin = require("oob_mirror")

local function setup(opts)
  local o = { cluster = "oob_node", token = "secret", batch_size = 1 }
  for k, v in pairs(opts or {}) do o[k] = v end
  assert(plugin.configure(o))
end

local S = {}

function S.basic()
  setup({ static_meta = { namespace = "shop" } })
  fake.exchange(plugin, {
    method = "POST", path = "/api/items?id=1%27&x=2", authority = "shop.example:8080",
    headers = { { "user-agent", "curl/8" }, { "a", "1" }, { "a", "2" },
                { "x-request-id", "rid-1" }, { "x-bin", "\255\0" } },
    body = { "hello ", "world" },
    status = 201, response_headers = { { "content-type", "text/plain" }, { "set-cookie", "s=1" } },
    response_body = { "created" },
  })
end

function S.no_body_no_port()
  setup()
  fake.exchange(plugin, { authority = "[2001:db8::1]", path = "/", protocol = "HTTP/2",
                          remote = "[2001:db8::7]:5000", direct = "[::1]:6000" })
end

function S.caps()
  setup({ max_request_body_bytes = 1000, max_response_body_bytes = 10 })
  local big = string.rep("A", 40000)
  fake.exchange(plugin, { method = "PUT", body = { big, big, big },
                          response_body = { "0123456789", "abcdef" } })
end

function S.no_response_body()
  setup({ capture_response_body = false })
  fake.exchange(plugin, { response_body = { "secret-data", "more" },
                          response_headers = { { "content-length", "15" } } })
end

-- a WebSocket upgrade: the response "body" is the connection's lifetime, it is not read
function S.upgrade()
  setup()
  local s = fake.stream({ path = "/ws", status = 101, headers = { { "upgrade", "websocket" } },
                          response_body = { "frame1", "frame2" }, yield = true })
  local req = coroutine.create(plugin.on_request)
  assert(coroutine.resume(req, s.request))
  local resp = coroutine.create(plugin.on_response)
  assert(coroutine.resume(resp, s.response))
  return { resp = coroutine.status(resp) }
end

function S.zero_caps()
  setup({ max_request_body_bytes = 0, max_response_body_bytes = 0 })
  fake.exchange(plugin, { body = { "abc" }, response_body = { "defg" } })
end

-- batch_size 3: nothing is sent before the third record, then one POST with all three
function S.size_bound()
  setup({ batch_size = 3, batch_age_ms = 60000 })
  local sent = {}
  for i = 1, 7 do
    fake.exchange(plugin, { path = "/r" .. i })
    sent[i] = #fake.calls
  end
  return sent
end

-- one record waits for batch_age_ms, then the next callback sends it
function S.age_bound()
  setup({ batch_size = 100, batch_age_ms = 1000 })
  local sent = {}
  fake.exchange(plugin, { path = "/first" })
  sent[1] = #fake.calls
  fake.now = fake.now + 0.5
  plugin.on_request(fake.stream({ path = "/second" }).request) -- still young: not sent
  sent[2] = #fake.calls
  fake.now = fake.now + 0.6
  plugin.on_request(fake.stream({ path = "/third" }).request) -- first is 1.1 s old
  sent[3] = #fake.calls
  return sent
end

-- max_batch_bytes: a batch is sent as soon as its encoded size reaches the bound
function S.bytes_bound()
  setup({ batch_size = 100, batch_age_ms = 60000, max_batch_bytes = 5000,
          max_request_body_bytes = 3000 })
  local sent = {}
  for i = 1, 4 do
    fake.exchange(plugin, { path = "/b" .. i, method = "POST", body = { string.rep("x", 3000) } })
    sent[i] = #fake.calls
  end
  return sent
end

-- the buffer keeps the newest max_buffered_records and counts what it dropped
function S.drop_oldest()
  setup({ batch_size = 100, batch_age_ms = 1000, max_buffered_records = 3 })
  for i = 1, 5 do fake.exchange(plugin, { path = "/d" .. i }) end
  local before = #fake.calls
  fake.now = fake.now + 2
  plugin.on_request(fake.stream({ path = "/trigger" }).request)
  return { before = before }
end

-- the buffer is also bounded in bytes
function S.drop_by_bytes()
  setup({ batch_size = 100, batch_age_ms = 1000, max_buffered_bytes = 65536,
          max_request_body_bytes = 30000, max_batch_bytes = 1048576 })
  for i = 1, 4 do
    fake.exchange(plugin, { path = "/y" .. i, method = "POST", body = { string.rep("b", 30000) } })
  end
  local before = #fake.calls
  fake.now = fake.now + 2
  plugin.on_request(fake.stream({ path = "/trigger" }).request)
  return { before = before }
end

-- a request whose response never comes is swept after state_ttl_ms and sent without one
function S.sweep()
  setup({ batch_size = 1, state_ttl_ms = 1000, sweep_interval_ms = 0 })
  plugin.on_request(fake.stream({ path = "/abandoned" }).request)
  local pending_before = plugin._worker().pending
  fake.now = fake.now + 0.5
  fake.exchange(plugin, { path = "/young" })
  local pending_mid = plugin._worker().pending
  fake.now = fake.now + 1
  fake.exchange(plugin, { path = "/later" })
  return { pending_before = pending_before, pending_mid = pending_mid,
           pending_after = plugin._worker().pending }
end

-- state is bounded: beyond max_pending_requests new requests are not captured
function S.pending_bound()
  setup({ max_pending_requests = 2, state_ttl_ms = 60000 })
  for i = 1, 3 do plugin.on_request(fake.stream({ path = "/p" .. i }).request) end
  return { pending = plugin._worker().pending }
end

-- sweeping is rate-limited by sweep_interval_ms
function S.sweep_interval()
  setup({ state_ttl_ms = 1000, sweep_interval_ms = 5000 })
  plugin.on_request(fake.stream({ path = "/a" }).request)        -- sweeps at t0 (nothing)
  fake.now = fake.now + 2
  plugin.on_request(fake.stream({ path = "/b" }).request)        -- too soon to sweep again
  local swept_early = plugin.stats().swept
  fake.now = fake.now + 4
  plugin.on_request(fake.stream({ path = "/c" }).request)        -- sweeps /a and /b
  return { swept_early = swept_early }
end

function S.sample(rate, n)
  setup({ sample_rate = tonumber(rate), batch_size = 10000, max_buffered_records = 100000 })
  for i = 1, tonumber(n) do fake.exchange(plugin, { path = "/s" .. i }) end
  return { captured = plugin.stats().captured, buffered = plugin._worker():count() }
end

-- every handle method the plugin calls raises in turn: the callbacks never raise
function S.raising(method)
  setup()
  local s = fake.stream({ path = "/x", body = { "abc" },
                          override = { [method] = function() error("boom " .. method) end } })
  local ok1, err1 = pcall(plugin.on_request, s.request)
  local ok2, err2 = pcall(plugin.on_response, s.response)
  -- the next request works normally
  fake.exchange(plugin, { path = "/after" })
  return { ok_request = ok1, ok_response = ok2, err = tostring(err1 or err2 or "") }
end

-- a failing httpCall is counted, the callback does not raise
function S.http_call_fails()
  setup()
  local s = fake.stream({ path = "/x", http_call_error = "cluster not found" })
  local ok1 = pcall(plugin.on_request, s.request)
  local ok2 = pcall(plugin.on_response, s.response)
  return { ok = ok1 and ok2 }
end

-- a record that cannot be encoded is dropped alone and counted
function S.unencodable()
  setup({ batch_size = 2 })
  fake.exchange(plugin, { path = "/bad", headers = { { "x-weird", print } } })
  fake.exchange(plugin, { path = "/good1" })
  fake.exchange(plugin, { path = "/good2" })
end

function S.bad_config()
  local results = {}
  local cases = {
    { unknown_key = 1 }, { batch_size = 0 }, { batch_size = 1.5 }, { sample_rate = 2 },
    { sample_rate = "1" }, { cluster = "" }, { path = "v1/batch" }, { token = 5 },
    { static_meta = { a = 1 } }, { max_request_body_bytes = -1 }, { timeout_ms = 0 },
  }
  for i, c in ipairs(cases) do
    local ok, err = plugin.configure(c)
    results[i] = { ok = ok or false, err = err or "" }
  end
  local ok_default = plugin.configure({}) and true or false
  plugin.configure({ batch_size = 0 }) -- disabled again
  local s = fake.stream({})
  local r1 = pcall(plugin.on_request, s.request)
  local r2 = pcall(plugin.on_request, fake.stream({}).request)
  return { cases = results, ok_default = ok_default, passthrough = r1 and r2 }
end

function S.describe()
  return require("oob.config").describe()
end

-- the response arrives while the request body is still streaming (Envoy resumes each
-- callback's coroutine as data arrives): no error, the record carries what was read
function S.interleaved()
  setup()
  local s = fake.stream({ method = "POST", body = { "part1", "part2", "part3" }, yield = true,
                          response_body = { "r" } })
  local req = coroutine.create(plugin.on_request)
  assert(coroutine.resume(req, s.request))       -- headers, then waits for chunk 1
  assert(coroutine.resume(req))                  -- chunk 1 read, waits for chunk 2
  local resp = coroutine.create(plugin.on_response)
  local steps = 0
  while coroutine.status(resp) ~= "dead" and steps < 10 do
    assert(coroutine.resume(resp, s.response)); steps = steps + 1
  end
  while coroutine.status(req) ~= "dead" and steps < 20 do
    assert(coroutine.resume(req)); steps = steps + 1
  end
  return { req = coroutine.status(req), resp = coroutine.status(resp) }
end

-- random ids: the per-worker token prefix and the random sequence after seeding
function S.ids()
  setup()
  local s = fake.exchange(plugin, { path = "/id" })
  return { token = s.metadata["oob.mirror"].t, prefix = plugin._worker().prefix,
           r = math.random(1, 2 ^ 30) }
end

-- One exchange described by a Lua table literal (fake.stream options, plus `config`),
-- counting the bodyChunks() calls of each side: a body is read only when there can be one.
function S.body_reads(spec)
  local opts = assert(loadstring("return " .. spec))()
  setup(opts.config)
  opts.config = nil
  local s = fake.stream(opts)
  local reads = { request = 0, response = 0 }
  for side, h in pairs({ request = s.request, response = s.response }) do
    local chunks = h.bodyChunks
    h.bodyChunks = function(self)
      reads[side] = reads[side] + 1
      return chunks(self)
    end
  end
  plugin.on_request(s.request)
  plugin.on_response(s.response)
  return reads
end

-- Request and response are linked by x-request-id when envoy_on_response can read the
-- request headers (no dynamicMetadata token then), by a token otherwise (old_envoy, or no
-- x-request-id). Returns the tokens set per stream.
function S.linking(old_envoy)
  setup({ batch_size = 3 })
  local old = old_envoy == "old"
  local streams = {
    fake.stream({ path = "/with-id", headers = { { "x-request-id", "rid-a" } }, status = 201,
                  old_envoy = old }),
    fake.stream({ path = "/without-id", status = 202, old_envoy = old }),
    fake.stream({ path = "/with-id-2", headers = { { "x-request-id", "rid-b" } },
                  status = 203, old_envoy = old }),
  }
  for _, s in ipairs(streams) do plugin.on_request(s.request) end
  for i = #streams, 1, -1 do plugin.on_response(streams[i].response) end
  local tokens = {}
  for i, s in ipairs(streams) do
    tokens[i] = s.metadata["oob.mirror"] and s.metadata["oob.mirror"].t or false
  end
  return { tokens = tokens, pending = plugin._worker().pending }
end

-- Requests in flight that share an x-request-id (a client may send one; Envoy keeps it for
-- internal requests) each get their own response, whatever the order of the responses.
function S.shared_request_id(order)
  setup({ batch_size = 3 })
  local streams = {}
  for i = 1, 3 do
    streams[i] = fake.stream({ path = "/dup" .. i, headers = { { "x-request-id", "same" } },
                               status = 200 + i })
    plugin.on_request(streams[i].request)
  end
  for c in order:gmatch("%d") do plugin.on_response(streams[tonumber(c)].response) end
  local w = plugin._worker()
  return { pending = w.pending, tokens = w.tokens, dups = next(w.dups) or false }
end

-- Pooled record tables are reused: a record with many headers, then small ones, buffered
-- together (encoded only when the batch is sent), keep exactly their own data.
function S.reuse()
  setup({ batch_size = 4 })
  local many = {}
  for i = 1, 120 do many[i] = { "x-h" .. i, string.rep("v", i) } end
  fake.exchange(plugin, { path = "/many", headers = many, response_headers = many,
                          method = "POST", body = { "big body" }, response_body = { "big" } })
  fake.exchange(plugin, { path = "/few", headers = { { "a", "1" } } })
  fake.exchange(plugin, { path = "/many2", headers = many })
  fake.exchange(plugin, { path = "/none" })
  fake.exchange(plugin, { path = "/next", headers = { { "b", "2" } } })
  fake.exchange(plugin, { path = "/next2" })
  fake.exchange(plugin, { path = "/next3" })
  fake.exchange(plugin, { path = "/next4" })
end

-- Texts are str when valid UTF-8 without a zero byte, else bin, in every field.
function S.texts()
  setup()
  fake.exchange(plugin, {
    path = "/caf\195\169/\255?q=\195\169&r=\128", authority = "h\195\169.example:80",
    headers = { { "x-utf8", "caf\195\169" }, { "x-latin1", "caf\233" },
                { "x-request-id", "rid\255" } },
    response_headers = { { "x-utf8", "\226\130\172" }, { "x-bin", "a\0b" } },
  })
end

-- The response comes before the first byte of the request body; the record is sent and its
-- table reused by the next request: the late body must not land in that one.
function S.reused_while_streaming()
  setup()
  local s1 = fake.stream({ method = "POST", path = "/upload", body = { "late1", "late2" },
                           yield = true })
  local co = coroutine.create(plugin.on_request)
  assert(coroutine.resume(co, s1.request))       -- waits for the first chunk
  plugin.on_response(s1.response)                -- sent at once (batch_size 1)
  local s2 = fake.stream({ path = "/next" })
  plugin.on_request(s2.request)                  -- a pooled table: the one just sent
  while coroutine.status(co) ~= "dead" do assert(coroutine.resume(co)) end
  plugin.on_response(s2.response)
end

-- ------------------------------------------------------------------ driver

local name = arg[1]
local fn = S[name]
if not fn then error("unknown scenario " .. tostring(name)) end
local result = fn(select(2, unpack(arg)))
local calls = {}
for i, c in ipairs(fake.calls) do
  calls[i] = { cluster = c.cluster, headers = c.headers, body = msgpack.bin(c.body),
               timeout = c.timeout, async = c.async }
end
local logs = {}
for i, l in ipairs(fake.logs) do logs[i] = l end
fake.emit({ result = result == nil and msgpack.null or result, calls = msgpack.array(calls),
            stats = plugin.stats() or msgpack.null, logs = msgpack.array(logs) })
