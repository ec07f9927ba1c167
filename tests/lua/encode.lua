-- Reads one Lua expression per line on stdin (M is oob.msgpack), encodes its value and
-- prints one line per expression: the hex encoding, or "ERR <message>".
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
package.path = here .. "/../../lua/?.lua;" .. package.path
local M = require("oob.msgpack")
local env = setmetatable({ M = M }, { __index = _G })

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

for line in io.lines() do
  local fn, err = loadstring("return " .. line)
  local out
  if not fn then
    out = "ERR compile: " .. err
  else
    setfenv(fn, env)
    local ok, value = pcall(fn)
    if not ok then
      out = "ERR eval: " .. tostring(value)
    else
      local data, encode_err = M.encode(value)
      out = data and hex(data) or ("ERR " .. tostring(encode_err))
    end
  end
  io.write(out, "\n")
end
