-- oob.msgpack: the small MessagePack encoder of the Envoy plugin.
--
-- Where it sits: oob.record encodes each record from the pieces below (str/bin prefixes,
-- float64, the ASCII check), oob.batch adds the envelope {"v": 1, "records": [...]}: the
-- body of POST /v1/batch. encode() encodes any value (tests, constant pieces). Encoding
-- only: the plugin never decodes.
--
-- Type mapping (LuaJIT 2.1, Lua 5.1 semantics: every plain number is a double):
--   nil, _M.null          -> nil
--   boolean               -> true / false
--   integral number       -> the smallest int/uint format (exact for |n| <= 2^53; larger
--                            doubles are integers too and are encoded exactly as they are)
--   other number          -> float 64 (NaN and +-inf included)
--   int64_t / uint64_t    -> int 64 / uint 64, exact over the whole range (LuaJIT cdata: 1LL)
--   string                -> str when it is valid UTF-8 without zero bytes, else bin: the
--                            node decodes str strictly, so an invalid str would lose the batch
--   _M.bin(s) / _M.str(s) -> forced bin / str (str still falls back to bin if not UTF-8)
--   _M.float(x)           -> forced float 64 (for timestamps that happen to be integral)
--   table                 -> array when marked with _M.array(t), or when its keys are
--                            exactly 1..n with n >= 1; map otherwise (mixed keys allowed).
--                            CONVENTION: an empty unmarked table is an empty MAP; use
--                            _M.array({}) (or _M.empty_array) for an empty array and
--                            _M.map(t) to force a map.
-- Errors (unsupported type, nesting deeper than MAX_DEPTH, which also stops cycles) return
-- nil, err: the encoder never raises on data.

local _M = { _VERSION = "0.1.0" }

local type = type
local pairs = pairs
local tostring = tostring
local setmetatable = setmetatable
local getmetatable = getmetatable
local floor = math.floor
local huge = math.huge
local frexp = math.frexp
local char = string.char
local byte = string.byte
local find = string.find
local concat = table.concat

local MAX_DEPTH = 32
local TWO32 = 4294967296
local TWO53 = 9007199254740992
local TWO63 = 9223372036854775808
local TWO64 = 18446744073709551616

local has_ffi, ffi = pcall(require, "ffi")
local has_bit, bit = pcall(require, "bit")

local ARRAY_MT = { __oob_msgpack = "array" }
local MAP_MT = { __oob_msgpack = "map" }
local BIN_MT = { __oob_msgpack = "bin" }
local STR_MT = { __oob_msgpack = "str" }

_M.null = setmetatable({}, { __oob_msgpack = "null", __tostring = function() return "null" end })

-- Mark a table as an array (also when empty). Returns the table.
function _M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

-- Mark a table as a map (a {1, 2} marked map has integer keys). Returns the table.
function _M.map(t)
  return setmetatable(t or {}, MAP_MT)
end

-- Wrap a string that must go out as bin (bodies: exact bytes, never decoded as text).
function _M.bin(s)
  return setmetatable({ s }, BIN_MT)
end

-- Wrap a string that should go out as str when it is valid UTF-8.
function _M.str(s)
  return setmetatable({ s }, STR_MT)
end

-- Wrap a number that must go out as float 64 even when it is integral (timestamps).
local FLOAT_MT = { __oob_msgpack = "float" }
function _M.float(x)
  return setmetatable({ x }, FLOAT_MT)
end

_M.empty_array = _M.array({})

-- ------------------------------------------------------------------ UTF-8

-- Strict UTF-8 as Python decodes it: no overlongs, no surrogates, nothing above U+10FFFF.
local function utf8_valid_from(s, i, n)
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    elseif c >= 0xC2 and c <= 0xDF then
      local c2 = byte(s, i + 1)
      if not c2 or c2 < 0x80 or c2 > 0xBF then return false end
      i = i + 2
    elseif c >= 0xE0 and c <= 0xEF then
      local c2, c3 = byte(s, i + 1, i + 2)
      if not c3 or c3 < 0x80 or c3 > 0xBF then return false end
      local lo, hi = 0x80, 0xBF
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
      if c2 < lo or c2 > hi then return false end
      i = i + 3
    elseif c >= 0xF0 and c <= 0xF4 then
      local c2, c3, c4 = byte(s, i + 1, i + 3)
      if not c4 or c3 < 0x80 or c3 > 0xBF or c4 < 0x80 or c4 > 0xBF then return false end
      local lo, hi = 0x80, 0xBF
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
      if c2 < lo or c2 > hi then return false end
      i = i + 4
    else
      return false
    end
  end
  return true
end

-- Index (1-based) of the first zero or non-ASCII byte of s, or nil. A pattern find, one C
-- call: inside Envoy the plugin's code mostly runs in LuaJIT's interpreter (its callbacks
-- cross into C at every handle call), where an ffi byte loop measured ten times slower.
local function first_special(s)
  return find(s, "[%z\128-\255]")
end

-- True when s can be a msgpack str: valid UTF-8 and no zero byte (bytes with a NUL are kept
-- as bin so that the node sees the exact bytes, as records.py asks for binary text).
function _M.is_text(s)
  local first = first_special(s)
  if not first then return true end
  if find(s, "\0", first, true) then return false end
  return utf8_valid_from(s, first, #s)
end

-- ------------------------------------------------------------------ scalars

local function be16(n)
  return char(floor(n / 256) % 256, n % 256)
end

local function be32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

-- Any integral double in [-2^63, 2^64) as 8 big-endian bytes (two's complement below 0).
-- floor(n / 2^32) and n - hi * 2^32 are exact for every double in range.
local function be64(n)
  local hi = floor(n / TWO32)
  local lo = n - hi * TWO32
  if hi < 0 then hi = hi + TWO32 end
  return be32(hi) .. be32(lo)
end

local function encode_integer(n)
  if n >= 0 then
    if n < 128 then return char(n) end
    if n < 256 then return "\204" .. char(n) end
    if n < 65536 then return "\205" .. be16(n) end
    if n < TWO32 then return "\206" .. be32(n) end
    return "\207" .. be64(n)
  end
  if n >= -32 then return char(n + 256) end
  if n >= -128 then return "\208" .. char(n + 256) end
  if n >= -32768 then return "\209" .. be16(n + 65536) end
  if n >= -2147483648 then return "\210" .. be32(n + TWO32) end
  return "\211" .. be64(n)
end

local encode_double
if has_ffi then
  local box = ffi.new("double[1]")
  local bytes = ffi.cast("const uint8_t *", box)
  local little = ffi.abi("le")
  encode_double = function(x)
    box[0] = x
    if little then
      return "\203" .. char(bytes[7], bytes[6], bytes[5], bytes[4],
                            bytes[3], bytes[2], bytes[1], bytes[0])
    end
    return "\203" .. char(bytes[0], bytes[1], bytes[2], bytes[3],
                          bytes[4], bytes[5], bytes[6], bytes[7])
  end
end

-- IEEE 754 binary64 by arithmetic, for a Lua without ffi (and tested against the ffi path).
local function encode_double_manual(x)
  local sign = 0
  if x < 0 or (x == 0 and 1 / x < 0) then sign = 128; x = -x end
  local exp, mant
  if x ~= x then
    exp, mant = 2047, 2 ^ 51               -- quiet NaN
  elseif x == huge then
    exp, mant = 2047, 0
  elseif x == 0 then
    exp, mant = 0, 0
  else
    local m, e = frexp(x)                  -- x = m * 2^e, 0.5 <= m < 1
    if e - 1 < -1022 then                  -- subnormal
      exp, mant = 0, x / 2 ^ -1074
    else
      exp, mant = e + 1022, (m * 2 - 1) * 2 ^ 52
    end
  end
  local hi = sign * 16777216 + exp * 1048576 + floor(mant / TWO32)
  return "\203" .. be32(hi) .. be32(mant % TWO32)
end
_M._encode_double_manual = encode_double_manual
encode_double = encode_double or encode_double_manual

local function encode_number(x)
  if x == floor(x) and x >= -TWO63 and x < TWO64 then
    return encode_integer(x)
  end
  return encode_double(x)
end

local function encode_int64_cdata(x)
  if not (has_ffi and has_bit) then return nil, "64-bit cdata needs ffi and bit" end
  local unsigned = ffi.istype("uint64_t", x)
  if not unsigned and not ffi.istype("int64_t", x) then
    return nil, "unsupported cdata " .. tostring(x)
  end
  if (unsigned or x >= 0) and x < TWO53 then return encode_integer(tonumber(x)) end
  if not unsigned and x < 0 and x >= -TWO53 then return encode_integer(tonumber(x)) end
  local out = {}
  for i = 1, 8 do
    out[i] = char(tonumber(bit.band(bit.rshift(x, (8 - i) * 8), 0xFF)))
  end
  -- non-negative values use the uint formats, as for plain numbers
  return ((unsigned or x >= 0) and "\207" or "\211") .. concat(out)
end

-- ------------------------------------------------------------------ writer

-- A writer is a table of encoded parts (w.n of them) joined once by result(), so a string
-- is never copied into a prefixed temporary (LuaJIT interns, i.e. hashes, every new
-- string); encode() uses one. reserve() keeps a slot for an array or map header whose
-- count is known only after its elements.
--   put(w, raw) put_str(w, s) put_bin(w, s) put_int(w, x) put_float(w, x) put_bool(w, b)
--   put_array(w, n) put_map(w, n) put_value(w, v) reserve(w) -> slot, result(w)
-- (string.buffer measured no faster inside Envoy for these small parts.)
local has_new, new_tab = pcall(require, "table.new")
if not has_new then new_tab = function() return {} end end

function _M.writer()
  local w = new_tab(64, 1)
  w.n = 0
  return w
end

local function put(w, x)
  local n = w.n + 1
  w[n] = x
  w.n = n
end
_M.put = put

-- A slot for a part written later: w[slot] = msgpack.map_header(count).
function _M.reserve(w)
  put(w, "")
  return w.n
end

function _M.result(w)
  return concat(w, "", 1, w.n)
end

local FIXSTR = {}
for n = 0, 31 do FIXSTR[n] = char(0xA0 + n) end

local function put_text(w, s)
  local n = #s
  if n < 32 then put(w, FIXSTR[n])
  elseif n < 256 then put(w, "\217" .. char(n))
  elseif n < 65536 then put(w, "\218" .. be16(n))
  else put(w, "\219" .. be32(n)) end
  if n > 0 then put(w, s) end
end

local function put_bin(w, s)
  local n = #s
  if n < 256 then put(w, "\196" .. char(n))
  elseif n < 65536 then put(w, "\197" .. be16(n))
  else put(w, "\198" .. be32(n)) end
  if n > 0 then put(w, s) end
end
_M.put_bin = put_bin

-- str when s is text, bin otherwise (see the header). Raises on a non-string: callers are
-- inside the plugin's pcall.
local function put_string(w, s)
  if _M.is_text(s) then return put_text(w, s) end
  return put_bin(w, s)
end
_M.put_str = put_string

local function header(n, fix, c16, c32)
  if n < 16 then return char(fix + n) end
  if n < 65536 then return c16 .. be16(n) end
  return c32 .. be32(n)
end

-- Headers of an array / a map of n elements, for callers that write the elements
-- themselves (oob.batch joins records it got encoded).
function _M.array_header(n)
  return header(n, 0x90, "\220", "\221")
end

function _M.map_header(n)
  return header(n, 0x80, "\222", "\223")
end

-- ------------------------------------------------------------------ pieces
-- oob.record writes a record as a table of encoded pieces that it stores itself (no put()
-- call per piece): these are the building blocks. Every function call and every new string
-- counts per request inside Envoy, so the prefixes of short strings are looked up, not
-- built.

-- STR_PREFIX[n] / BIN_PREFIX[n]: the header of a str / bin of n < 256 bytes.
local STR_PREFIX, BIN_PREFIX = {}, {}
for n = 0, 255 do
  STR_PREFIX[n] = n < 32 and char(0xA0 + n) or "\217" .. char(n)
  BIN_PREFIX[n] = "\196" .. char(n)
end
_M.STR_PREFIX, _M.BIN_PREFIX = STR_PREFIX, BIN_PREFIX

function _M.str_prefix(n)
  if n < 256 then return STR_PREFIX[n] end
  if n < 65536 then return "\218" .. be16(n) end
  return "\219" .. be32(n)
end

function _M.bin_prefix(n)
  if n < 256 then return BIN_PREFIX[n] end
  if n < 65536 then return "\197" .. be16(n) end
  return "\198" .. be32(n)
end

-- A number in its smallest msgpack form (an int when integral).
_M.number = encode_number

-- float 64 of x. Positive normal doubles (timestamps, durations) by arithmetic: one
-- string.char call, cheaper in the interpreter than the ffi box (each cdata access is a
-- metamethod call there); anything else by encode_double.
local TWO52 = 4503599627370496
local ZERO = "\203\0\0\0\0\0\0\0\0"
function _M.float64(x)
  if x == 0 and 1 / x > 0 then return ZERO end
  if x > 0 and x < huge then
    local m, e = frexp(x)                  -- x = m * 2^e, 0.5 <= m < 1
    if e > -1021 then
      local mant = (m * 2 - 1) * TWO52     -- the 52 fraction bits, an exact integer
      local hi = (e + 1022) * 1048576 + floor(mant / TWO32)
      local lo = mant % TWO32
      return char(203, floor(hi / 16777216), floor(hi / 65536) % 256, floor(hi / 256) % 256,
                  hi % 256, floor(lo / 16777216), floor(lo / 65536) % 256,
                  floor(lo / 256) % 256, lo % 256)
    end
  end
  return encode_double(x)
end

-- True when every byte of s is in 1..127: then s is text (a str) without a closer look.
-- oob.record joins all the texts of a record and asks once: one C scan instead of a
-- pattern match per header. libc's strspn when ffi has it (it stops at the terminating zero
-- of the Lua string, or at the first byte outside the set), else an anchored pattern.
local ASCII_SET
do
  local set = {}
  for c = 1, 127 do set[c] = char(c) end
  ASCII_SET = concat(set)
end
local strspn
if has_ffi then
  -- declared under our own name (returning int: strings here are far below 2^31) so that a
  -- plain Lua number comes back, and another module's strspn declaration cannot clash
  pcall(ffi.cdef, 'int oob_strspn(const char *s, const char *accept) __asm__("strspn");')
  local ok, fn = pcall(function() return ffi.C.oob_strspn end)
  if ok and pcall(fn, "a", ASCII_SET) then strspn = fn end
end
if strspn then
  function _M.ascii(s)
    return strspn(s, ASCII_SET) == #s
  end
else
  function _M.ascii(s)
    return find(s, "^[\1-\127]*$") ~= nil
  end
end

-- The encoded form of a text (str when is_text, else bin), as one piece.
function _M.text(s)
  local n = #s
  if _M.is_text(s) then return _M.str_prefix(n) .. s end
  return _M.bin_prefix(n) .. s
end

function _M.put_int(w, x) put(w, encode_number(x)) end
function _M.put_float(w, x) put(w, encode_double(x)) end
function _M.put_bool(w, b) put(w, b and "\195" or "\194") end
function _M.put_array(w, n) put(w, _M.array_header(n)) end
function _M.put_map(w, n) put(w, _M.map_header(n)) end

-- ------------------------------------------------------------------ containers

local encode_value

-- n when the keys of t are exactly 1..n (n >= 1), else nil.
local function sequence_length(t)
  local count, max = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= floor(k) then return nil end
    count = count + 1
    if k > max then max = k end
  end
  -- distinct positive integers, as many as the largest: exactly 1..n
  if count > 0 and max == count then return count end
  return nil
end

local function encode_array(w, t, n, depth)
  put(w, _M.array_header(n))
  for i = 1, n do
    local ok, err = encode_value(w, t[i], depth)
    if not ok then return nil, err end
  end
  return true
end

local function encode_map(w, t, depth)
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  put(w, _M.map_header(count))
  for k, v in pairs(t) do
    local ok, err = encode_value(w, k, depth)
    if not ok then return nil, err end
    ok, err = encode_value(w, v, depth)
    if not ok then return nil, err end
  end
  return true
end

local function encode_wrapped(w, kind, x)
  if kind == "null" then put(w, "\192")
  elseif kind == "bin" then put_bin(w, x)
  elseif kind == "str" then put_string(w, x)
  elseif type(x) ~= "number" then return nil, "float of a " .. type(x)
  else put(w, encode_double(x)) end
  return true
end

local function encode_table(w, t, depth)
  if depth > MAX_DEPTH then return nil, "nesting deeper than " .. MAX_DEPTH end
  local mt = getmetatable(t)
  local kind = mt and mt.__oob_msgpack
  if kind == "array" then return encode_array(w, t, #t, depth + 1) end
  if kind and kind ~= "map" then return encode_wrapped(w, kind, t[1]) end
  if kind ~= "map" then
    local n = sequence_length(t)
    if n then return encode_array(w, t, n, depth + 1) end
  end
  return encode_map(w, t, depth + 1)
end

encode_value = function(w, v, depth)
  local tv = type(v)
  if tv == "string" then
    put_string(w, v)
  elseif tv == "number" then
    put(w, encode_number(v))
  elseif tv == "table" then
    return encode_table(w, v, depth)
  elseif tv == "boolean" then
    put(w, v and "\195" or "\194")
  elseif tv == "nil" then
    put(w, "\192")
  elseif tv == "cdata" then
    local s, err = encode_int64_cdata(v)
    if not s then return nil, err end
    put(w, s)
  else
    return nil, "cannot encode a " .. tv
  end
  return true
end

-- Append any value (returns true, or nil and an error).
function _M.put_value(w, v)
  return encode_value(w, v, 0)
end

-- Encode one value. Returns the msgpack string, or nil and an error message.
function _M.encode(value)
  local w = _M.writer()
  local ok, err = encode_value(w, value, 0)
  if not ok then return nil, err end
  return _M.result(w)
end

return _M
