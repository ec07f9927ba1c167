-- oob.batch: per-worker state of the plugin: the outgoing record buffer, the per-request
-- state between envoy_on_request and envoy_on_response, counters, ids and sampling.
--
-- Where it sits: oob_mirror.lua owns one batch object per Envoy worker (one Lua state per
-- worker thread, so nothing here is shared or locked). Envoy's Lua API has no timer: the
-- buffer is flushed only from a request or response callback, when it is full (batch_size
-- or max_batch_bytes) or older than batch_age_ms. Memory is bounded twice:
--   * the buffer holds at most max_buffered_records records and max_buffered_bytes (their
--     estimated encoded size); pushing more drops the oldest and counts it (Kong's queue
--     policy: never block, never grow);
--   * per-request state holds at most max_pending_requests entries and is swept by age,
--     since envoy_on_response never runs when a client aborts (such a request is still
--     sent, without a response).
-- Records arrive as oob.record captured them and are msgpack-encoded by take(), when their
-- batch is sent: all of a batch into one table of pieces, joined once, its size in bytes
-- exact.

local msgpack = require("oob.msgpack")

local _M = { _VERSION = "0.2.0" }
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

-- gettimeofday through ffi, declared under our own names (no clash with other modules'
-- declarations). Where long is 64-bit little-endian (x86-64, arm64), the struct is read as
-- 32-bit words: a 64-bit field read in the interpreter boxes an int64 cdata per call.
local clock
if has_ffi then
  local ok = pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_usec; } oob_timeval;
    typedef struct { uint32_t w[4]; } oob_timeval_words;
    int oob_gettimeofday(oob_timeval *tv, void *tz) __asm__("gettimeofday");
    int oob_gettimeofday_words(oob_timeval_words *tv, void *tz) __asm__("gettimeofday");
  ]])
  local found, gettimeofday = pcall(function() return ffi.C.oob_gettimeofday end)
  local tv = ok and found and ffi.new("oob_timeval")
  if tv and pcall(gettimeofday, tv, nil) then
    clock = function()
      gettimeofday(tv, nil)
      return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1000000
    end
    if ffi.abi("le") and ffi.sizeof("long") == 8 then
      local words = ffi.new("oob_timeval_words")
      local w, get = words.w, ffi.C.oob_gettimeofday_words
      clock = function()
        get(words, nil)
        return w[1] * 4294967296 + w[0] + w[2] / 1000000
      end
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

-- encode(record, pieces, w) -> new w (the record msgpack-encoded into pieces[w + 1..]) and
-- recycle(record) come from oob.record (bound to the worker's configuration by oob_mirror).
function _M.new(cfg, encode, recycle)
  _M.seed()
  local self = {
    cfg = cfg, encode = encode, recycle = recycle, pieces = {},
    -- buffer: records in items[head..tail] (see below), their sizes and push times;
    -- pieces: the batch being encoded (take())
    items = {}, sizes = {}, times = {}, head = 1, tail = 0, bytes = 0,
    -- per-request state (see open): x-request-id -> record, token -> record, and how many
    -- token-tracked requests share an x-request-id with another one in flight
    by_rid = {}, by_token = {}, dups = {}, pending = 0, tokens = 0, last_sweep = 0,
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

-- Track rec (an oob.record table: rec.t0, rec.dup) until its response. By its x-request-id
-- `rid` when given (the response side reads it back from requestHeaders(): no per-request
-- token, no dynamicMetadata round trip), else by a fresh token that the caller puts in
-- dynamicMetadata. A second request in flight with the same x-request-id (a client may send
-- one; Envoy keeps it for internal requests) gets a token, and dups[rid] tells the response
-- side to look for a token first. Returns the token, nil when tracked by rid, false when
-- max_pending_requests are in flight (not tracked, counted).
function _M:open(rec, rid)
  if self.pending >= self.cfg.max_pending_requests then
    self.stats.skipped = self.stats.skipped + 1
    return false
  end
  self.pending = self.pending + 1
  local by_rid = self.by_rid
  if rid and by_rid[rid] == nil then
    by_rid[rid] = rec
    return nil
  end
  self.seq = self.seq + 1
  local token = self.prefix .. format("%x", self.seq)
  self.by_token[token] = rec
  self.tokens = self.tokens + 1
  if rid then
    rec.dup = rid
    self.dups[rid] = (self.dups[rid] or 0) + 1
  end
  return token
end

local function release_dup(self, rid)
  local n = self.dups[rid]
  if n then self.dups[rid] = n > 1 and n - 1 or nil end
end

-- The record tracked under rid (removed), or nil.
function _M:claim_rid(rid)
  local rec = self.by_rid[rid]
  if rec == nil then return nil end
  self.by_rid[rid] = nil
  self.pending = self.pending - 1
  return rec
end

-- The record tracked under token (removed), or nil when unknown or swept.
function _M:claim(token)
  local rec = token and self.by_token[token]
  if not rec then return nil end
  self.by_token[token] = nil
  self.pending = self.pending - 1
  self.tokens = self.tokens - 1
  if rec.dup then release_dup(self, rec.dup) end
  return rec
end

-- Remove state older than state_ttl_ms, at most once per sweep_interval_ms. Returns the
-- records of the swept requests (their response was never seen) so they can still be sent.
function _M:sweep(now)
  local cfg = self.cfg
  if now - self.last_sweep < cfg.sweep_interval_ms / 1000 then return nil end
  self.last_sweep = now
  local ttl = cfg.state_ttl_ms / 1000
  local swept
  for rid, rec in pairs(self.by_rid) do
    if now - rec.t0 >= ttl then
      swept = swept or {}
      swept[#swept + 1] = self:claim_rid(rid)
    end
  end
  for token, rec in pairs(self.by_token) do
    if now - rec.t0 >= ttl then
      swept = swept or {}
      swept[#swept + 1] = self:claim(token)
    end
  end
  if swept then self.stats.swept = self.stats.swept + #swept end
  return swept
end

-- ------------------------------------------------------------------ buffer
-- items[head..tail] are records as oob.record captured them (tables, with an estimated
-- size) or already encoded (strings, exact size): encoding waits for the batch's send, and
-- a record encoded for a batch it did not fit in stays encoded.

function _M:count()
  return self.tail - self.head + 1
end

local function drop_oldest(self)
  local h = self.head
  local item = self.items[h]
  self.bytes = self.bytes - self.sizes[h]
  self.items[h], self.sizes[h], self.times[h] = nil, nil, nil
  self.head = h + 1
  self.stats.dropped = self.stats.dropped + 1
  if type(item) == "table" and self.recycle then self.recycle(item) end
end

-- Append one record (a captured table with its estimated encoded size, or a msgpack
-- string), dropping the oldest when the buffer is full. Returns true, or nil and an error
-- for anything else (dropped and counted).
function _M:push(item, size, now)
  local kind = type(item)
  if kind == "string" then
    size = #item
  elseif kind ~= "table" or type(size) ~= "number" then
    self.stats.encode_errors = self.stats.encode_errors + 1
    return nil, "not a record"
  end
  local cfg = self.cfg
  while self.tail >= self.head and (self.tail - self.head + 1 >= cfg.max_buffered_records
                                    or self.bytes + size > cfg.max_buffered_bytes) do
    drop_oldest(self)
  end
  local t = self.tail + 1
  self.items[t], self.sizes[t], self.times[t] = item, size, now
  self.tail = t
  self.bytes = self.bytes + size
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

local has_clear, clear = pcall(require, "table.clear")
if not has_clear then
  clear = function(t) for k in pairs(t) do t[k] = nil end end
end

-- Bytes of the pieces W[from..to].
local function piece_bytes(W, from, to)
  local n = 0
  for k = from, to do n = n + #W[k] end
  return n
end

-- Write the record at h into the batch's pieces from slot w + 1: a msgpack string as it
-- is, a captured table through encode() (the table then goes back to the pool). Returns
-- the new w and the record's bytes; nil when encoding failed (the record is dropped and
-- counted, the batch goes on).
local function write_record(self, h, W, w)
  local item = self.items[h]
  if type(item) == "string" then
    W[w + 1] = item
    return w + 1, #item
  end
  local ok, w1 = pcall(self.encode, item, W, w)
  if not ok then
    self.stats.errors = self.stats.errors + 1
    self.last_error = w1
    if self.recycle then self.recycle(item) end
    return nil
  end
  return w1, piece_bytes(W, w + 1, w1)
end

-- Take up to batch_size records (and at most max_batch_bytes, unless one record is
-- bigger) as the body of one POST /v1/batch: {"v": 1, "records": [...]}, encoded into one
-- table of pieces and joined once. Returns body, record count; nil when nothing was left
-- to send. A record that does not fit stays in the buffer, encoded (a string).
function _M:take()
  local cfg, W = self.cfg, self.pieces
  local w, n, size = 1, 0, 0
  while self.head <= self.tail and n < cfg.batch_size do
    local h = self.head
    local w1, bytes = write_record(self, h, W, w)
    if w1 and n > 0 and size + bytes > cfg.max_batch_bytes then
      local item = self.items[h]
      if type(item) == "table" then
        self.items[h] = concat(W, "", w + 1, w1)
        if self.recycle then self.recycle(item) end
      end
      self.bytes = self.bytes - self.sizes[h] + bytes
      self.sizes[h] = bytes
      break
    end
    if w1 then
      local item = self.items[h]
      if type(item) == "table" and self.recycle then self.recycle(item) end
      n, size, w = n + 1, size + bytes, w1
    end
    self.bytes = self.bytes - self.sizes[h]
    self.items[h], self.sizes[h], self.times[h] = nil, nil, nil
    self.head = h + 1
  end
  if n == 0 then
    clear(W)
    return nil, 0
  end
  W[1] = ENVELOPE .. msgpack.array_header(n)
  local body = concat(W, "", 1, w)
  clear(W)  -- a sent batch's strings are not kept alive
  return body, n
end

return _M
