-- Dovecot 2.3 Lua passdb and userdb asking a running yubin (Debian packages:
-- dovecot-auth-lua, lua-socket). yubin checks the login with its own hashes and
-- failed-login throttle and answers with the user's Maildir, uid/gid and quota
-- rule, over the socket the vpopmail plugin serves (`authSocket: auth.sock`,
-- relative to yubin's dataDir). No process is started per login, as
-- `yubin checkpassword` needs.
--
-- In dovecot.conf:
--   passdb { driver = lua
--            args = file=/etc/dovecot/dovecot-yubin.lua blocking=yes }
--   userdb { driver = prefetch }
--   userdb { driver = lua
--            args = file=/etc/dovecot/dovecot-yubin.lua blocking=yes }

-- Where yubin's socket is: DATADIR/auth.sock.
local SOCKET = "/var/lib/yubin/auth.sock"

local unix = require("socket.unix")

local function enc(s)
  return (tostring(s or ""):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function dec(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- One request, one reply line; nil and the reason when yubin cannot be asked.
local function ask(fields)
  local c = unix()
  c:settimeout(10)
  local ok, err = c:connect(SOCKET)
  if not ok then return nil, "cannot reach yubin at " .. SOCKET .. ": " .. tostring(err) end
  local parts = {}
  for i, f in ipairs(fields) do parts[i] = (i == 1) and f or enc(f) end
  c:send(table.concat(parts, "\t") .. "\n")
  local reply, rerr = c:receive("*l")
  c:close()
  if not reply then return nil, "no answer from yubin: " .. tostring(rerr) end
  return reply
end

-- The key=value fields of an OK reply; `strip` drops the userdb_ prefix (for a userdb answer).
local function fields(reply, strip)
  local t = {}
  for k, v in reply:gmatch("\t([^=\t]+)=([^\t]*)") do
    if strip then k = k:gsub("^userdb_", "") end
    t[k] = dec(v)
  end
  return t
end

local function reason(reply)
  return dec(reply:match("^%u+\t(.*)$") or reply)
end

function script_init()
  return 0
end

function auth_password_verify(req, pass)
  local reply, err = ask({ "PASS", req.user, pass, req.service, req.remote_ip })
  if not reply then return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, err end
  local verdict = reply:match("^(%u+)")
  if verdict == "OK" then return dovecot.auth.PASSDB_RESULT_OK, fields(reply, false) end
  if verdict == "NOUSER" then return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "no such user" end
  if verdict == "FAIL" then return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, reason(reply) end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, reason(reply)
end

function auth_userdb_lookup(req)
  local reply, err = ask({ "USER", req.user, req.service })
  if not reply then return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, err end
  local verdict = reply:match("^(%u+)")
  if verdict == "OK" then
    local t = fields(reply, true)
    t.user = nil
    return dovecot.auth.USERDB_RESULT_OK, t
  end
  if verdict == "NOUSER" then return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, "no such user" end
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, reason(reply)
end
