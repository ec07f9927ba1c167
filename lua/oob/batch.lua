-- oob.batch: per-worker state of the plugin: the outgoing record buffer, the per-request
-- state between envoy_on_request and envoy_on_response, counters, ids and sampling.
--
-- Where it sits: oob_mirror.lua owns one batch object per Envoy worker (one Lua state per
-- worker thread, so nothing here is shared or locked). Envoy's Lua API has no timer: the
-- buffer is flushed only from a request or response callback, when it is full (batch_size
-- or max_batch_bytes) or older than batch_age_ms. Memory is bounded twice:
--   * the buffer holds at most max_buffered_records encoded records and max_buffered_bytes;
--     pushing more drops the oldest and counts it (Kong's queue policy: never block, never
--     grow);
--   * per-request state holds at most max_pending_requests entries and is swept by age,
--     since envoy_on_response never runs when a client aborts.
-- Records arrive msgpack-encoded (oob.record writes them), so the batch size in bytes is
-- exact and a batch is just the envelope plus the records joined.

local msgpack = require("oob.msgpack")

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local pairs = pairs
local type = type
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable
local format = string.format
local match = string.match
local concat = table.concat
local random = math.random
local floor = math.floor

local has_ffi, ffi = pcall(require, "ffi")

-- {"v": 1, "records": <array header follows>}
local ENVELOPE = msgpack.map_header(2) .. msgpack.encode("v") .. msgpack.encode(1)
  .. msgpack.encode("records")

-- ------------------------------------------------------------------ clock and ids

local clock
if has_ffi then
  local ok = pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_usec; } oob_timeval;
    int gettimeofday(oob_timeval *tv, void *tz);
  ]])
  local tv = ok and ffi.new("oob_timeval")
  local found, gettimeofday = pcall(function() return ffi.C.gettimeofday end)
  if tv and found and pcall(gettimeofday, tv, nil) then
    clock = function()
      gettimeofday(tv, nil)
      return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1000000
    end
  end
end
-- Seconds since the epoch as a float (microseconds with ffi; whole seconds without).
_M.clock = clock or os.time

-- math.random is unseeded in each worker's Lua state: every worker would draw the same
-- sequence. Mix the time with the address of a fresh table (it differs per Lua state).
function _M.seed()
  local addr = tonumber(match(tostring({}), "0x(%x+)") or "0", 16) or 0
  local seed = (floor(_M.clock() * 1000000) + addr) % 2147483647
  math.randomseed(seed)
  return seed
end

local function random_hex(n)
  local out = {}
  for i = 1, n do out[i] = format("%x", random(0, 15)) end
  return concat(out)
end

-- ------------------------------------------------------------------ construction

function _M.new(cfg)
  _M.seed()
  local self = {
    cfg = cfg,
    -- buffer: encoded records in items[head..tail], their sizes and push times
    items = {}, sizes = {}, times = {}, head = 1, tail = 0, bytes = 0,
    -- per-request state: token -> { t0 = seconds, rec = record }
    states = {}, pending = 0, last_sweep = 0,
    prefix = random_hex(12), seq = 0,
    stats = { captured = 0, sampled_out = 0, skipped = 0, dropped = 0, swept = 0,
              encode_errors = 0, errors = 0, batches = 0, records_sent = 0,
              send_errors = 0 },
  }
  return setmetatable(self, mt)
end

-- ------------------------------------------------------------------ sampling and state

function _M:sample()
  local rate = self.cfg.sample_rate
  if rate >= 1 or (rate > 0 and random() < rate) then return true end
  self.stats.sampled_out = self.stats.sampled_out + 1
  return false
end

-- A fresh token for rec, or nil (counted) when max_pending_requests are in flight.
function _M:open(rec, now)
  if self.pending >= self.cfg.max_pending_requests then
    self.stats.skipped = self.stats.skipped + 1
    return nil
  end
  self.seq = self.seq + 1
  local token = self.prefix .. format("%x", self.seq)
  self.states[token] = { t0 = now, rec = rec }
  self.pending = self.pending + 1
  return token
end

-- The record stored under token, removed from the state table; nil when unknown or swept.
function _M:claim(token)
  local st = token and self.states[token]
  if not st then return nil end
  self.states[token] = nil
  self.pending = self.pending - 1
  return st.rec
end

-- Remove state older than state_ttl_ms, at most once per sweep_interval_ms. Returns the
-- records of the swept requests (their response was never seen) so they can still be sent.
function _M:sweep(now)
  local cfg = self.cfg
  if now - self.last_sweep < cfg.sweep_interval_ms / 1000 then return nil end
  self.last_sweep = now
  local ttl = cfg.state_ttl_ms / 1000
  local swept
  for token, st in pairs(self.states) do
    if now - st.t0 >= ttl then
      self.states[token] = nil
      self.pending = self.pending - 1
      self.stats.swept = self.stats.swept + 1
      swept = swept or {}
      swept[#swept + 1] = st.rec
    end
  end
  return swept
end

-- ------------------------------------------------------------------ buffer

function _M:count()
  return self.tail - self.head + 1
end

local function drop_oldest(self)
  local h = self.head
  self.bytes = self.bytes - self.sizes[h]
  self.items[h], self.sizes[h], self.times[h] = nil, nil, nil
  self.head = h + 1
  self.stats.dropped = self.stats.dropped + 1
end

-- Append one encoded record (a msgpack string), dropping the oldest when the buffer is
-- full. Returns true, or nil and an error for anything but a string (dropped and counted).
function _M:push(data, now)
  if type(data) ~= "string" then
    self.stats.encode_errors = self.stats.encode_errors + 1
    return nil, "record is not encoded"
  end
  local cfg = self.cfg
  while self:count() > 0 and (self:count() >= cfg.max_buffered_records
                              or self.bytes + #data > cfg.max_buffered_bytes) do
    drop_oldest(self)
  end
  local t = self.tail + 1
  self.items[t], self.sizes[t], self.times[t] = data, #data, now
  self.tail = t
  self.bytes = self.bytes + #data
  self.stats.captured = self.stats.captured + 1
  return true
end

-- True when the buffer should be sent now: full, too big, or its oldest record too old.
function _M:due(now)
  local n = self:count()
  if n <= 0 then return false end
  local cfg = self.cfg
  return n >= cfg.batch_size or self.bytes >= cfg.max_batch_bytes
    or (now - self.times[self.head]) * 1000 >= cfg.batch_age_ms
end

-- Take up to batch_size records (and at most about max_batch_bytes) as the body of one
-- POST /v1/batch: {"v": 1, "records": [...]}. Returns body, record count; nil when empty.
function _M:take()
  local cfg = self.cfg
  local parts, n, size = {}, 0, 0
  while self.head <= self.tail and n < cfg.batch_size do
    local h = self.head
    if n > 0 and size + self.sizes[h] > cfg.max_batch_bytes then break end
    n = n + 1
    parts[n + 1] = self.items[h]
    size = size + self.sizes[h]
    self.bytes = self.bytes - self.sizes[h]
    self.items[h], self.sizes[h], self.times[h] = nil, nil, nil
    self.head = h + 1
  end
  if n == 0 then return nil, 0 end
  parts[1] = ENVELOPE .. msgpack.array_header(n)
  return concat(parts), n
end

return _M
