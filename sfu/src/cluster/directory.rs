//! The cluster's shared state in Redis: which nodes are alive (each with its addresses and
//! load), which node is the origin of each room, and which nodes are its edges.
//!
//! Liveness is Redis key expiry: a node's key lives for the directory's TTL and each heartbeat
//! renews it, so a node that is killed (no [`Directory::leave`]) disappears within one TTL.
//! A room's origin claim and a node's edge entries only count while their node is alive, so
//! nothing a dead node held blocks a takeover.
//!
//! Keys (P is the prefix, `classroom:` by default; every name is escaped, see [`escape`]):
//! * `P node:{id}`: the node's [`NodeInfo`] as JSON, expires after the TTL.
//! * `P nodes`: set of the ids that registered (dead ones are pruned when listed).
//! * `P origin:{room}`: the origin node's id, expires after the TTL, renewed by the holder's
//!   heartbeat.
//! * `P held:{id}`: set of the rooms a node holds as origin (what its heartbeat renews).
//! * `P edges:{room}`: set of the node ids serving the room as edges.
//! * `P edging:{id}`: set of the rooms a node is an edge of (what `leave` removes).
//! * `P rooms`: set of the rooms with an origin or edges (pruned when listed).
//!
//! Decisions that read and write several keys run as Lua scripts, so they are atomic.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, Script};
use serde::{Deserialize, Serialize};

/// Key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "classroom:";

/// Longest node id or room name accepted (bytes, before escaping).
pub const MAX_NAME_LEN: usize = 256;

/// This node's load, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Share of all cores this process uses, 0..=1.
    pub cpu: f32,
    /// RTP packets forwarded per second.
    pub forwarded_pps: f64,
    /// Classrooms (WHEP viewers) served.
    pub classrooms: u32,
    /// Rooms with at least one participant on this node.
    pub rooms: u32,
}

/// One node as registered in the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    /// Public base URL of the node's HTTP API, e.g. `http://127.0.0.1:7800`.
    pub http: String,
    /// Where other nodes reach its relay (QUIC).
    pub relay: std::net::SocketAddr,
    pub load: NodeLoad,
    /// When the heartbeat was written, milliseconds since the Unix epoch (set by `heartbeat`).
    pub updated_ms: u64,
}

/// The result of [`Directory::claim_origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginClaim {
    /// The room's origin is now (or already was) the claiming node.
    Mine,
    /// Another alive node holds it.
    Held(String),
}

/// One room as `/api/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEntry {
    pub room: String,
    /// Its origin node, if that node is alive.
    pub origin: Option<String>,
    /// Its alive edge nodes, sorted.
    pub edges: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid Redis URL {url}: {source}")]
    BadUrl { url: String, source: RedisError },
    #[error("cannot connect to Redis at {url}: {source}")]
    Unreachable { url: String, source: RedisError },
    #[error("Redis at {url} did not answer {what} within {limit:?}")]
    Timeout {
        url: String,
        what: &'static str,
        limit: Duration,
    },
    #[error("Redis {what} failed at {url}: {source}")]
    Redis {
        url: String,
        what: &'static str,
        source: RedisError,
    },
    #[error("invalid {what} {value:?}: {why}")]
    BadName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("directory TTL must be at least 100 ms, got {0:?}")]
    BadTtl(Duration),
    #[error("unreadable directory entry {key}: {why}")]
    BadEntry { key: String, why: String },
}

/// Membership and room directory. Cheap to clone; clones share one connection, which
/// reconnects by itself after Redis restarts or the network drops.
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    prefix: String,
    ttl: Duration,
    /// Every operation's bound: a Redis that stopped answering gives an error, not a hang.
    op_limit: Duration,
    scripts: Scripts,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

impl Directory {
    /// Connects with the default prefix. Fails within a few seconds, with the reason, if Redis
    /// cannot be reached or does not answer.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Directory, DirectoryError> {
        Self::connect_with_prefix(url, DEFAULT_PREFIX, ttl).await
    }

    /// Connects with keys under `prefix` (tests use one prefix each).
    pub async fn connect_with_prefix(
        url: &str,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Directory, DirectoryError> {
        let shown = redact(url);
        if ttl < Duration::from_millis(100) {
            return Err(DirectoryError::BadTtl(ttl));
        }
        let client = redis::Client::open(url).map_err(|source| DirectoryError::BadUrl {
            url: shown.clone(),
            source,
        })?;
        // Operations must not outlive a heartbeat period by much; reconnection is retried on
        // the next operation rather than for long inside one.
        let op_limit = (ttl * 2).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_limit))
            .set_response_timeout(Some(op_limit))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            // A server that accepts connections but is not Redis (or is stuck) fails here.
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let conn = match tokio::time::timeout(op_limit * 2, connect).await {
            Err(_) => {
                return Err(DirectoryError::Timeout {
                    url: shown,
                    what: "connect",
                    limit: op_limit * 2,
                })
            }
            Ok(Err(source)) => {
                return Err(DirectoryError::Unreachable { url: shown, source });
            }
            Ok(Ok(conn)) => conn,
        };
        Ok(Directory {
            conn,
            inner: Arc::new(Inner {
                url: shown,
                prefix: prefix.to_string(),
                ttl,
                op_limit,
                scripts: Scripts::new(),
            }),
        })
    }

    /// The TTL of node keys and origin claims.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Registers or refreshes the node (its key lives one TTL), renews the origin claims it
    /// still holds (one it lost to another node is forgotten; one that expired while Redis
    /// was unreachable is taken again if nobody took it) and restores its edge entries.
    /// `updated_ms` is set to now.
    pub async fn heartbeat(&self, info: &NodeInfo) -> Result<(), DirectoryError> {
        let id = self.name("node id", &info.id)?;
        let mut info = info.clone();
        info.updated_ms = now_ms();
        let json = serde_json::to_string(&info).map_err(|e| DirectoryError::BadEntry {
            key: self.key("node:", &id),
            why: e.to_string(),
        })?;
        let mut inv = self.inner.scripts.heartbeat.prepare_invoke();
        inv.key(self.key("node:", &id))
            .key(self.key("nodes", ""))
            .key(self.key("held:", &id))
            .key(self.key("edging:", &id))
            .key(self.key("rooms", ""))
            .arg(&self.inner.prefix)
            .arg(&id)
            .arg(self.ttl_ms())
            .arg(json);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .bounded("heartbeat", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Clean shutdown: the node's key goes, its origin claims are released and its edge
    /// entries removed. Also the way to drop what an earlier run with the same id left.
    pub async fn leave(&self, node: &str) -> Result<(), DirectoryError> {
        let id = self.name("node id", node)?;
        let mut inv = self.inner.scripts.leave.prepare_invoke();
        inv.key(self.key("node:", &id))
            .key(self.key("nodes", ""))
            .key(self.key("held:", &id))
            .key(self.key("edging:", &id))
            .arg(&self.inner.prefix)
            .arg(&id);
        let mut conn = self.conn.clone();
        let _: i64 = self.bounded("leave", inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// The alive nodes, sorted by id. An unreadable entry is skipped with a warning.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DirectoryError> {
        let mut inv = self.inner.scripts.nodes.prepare_invoke();
        inv.key(self.key("nodes", "")).arg(&self.inner.prefix);
        let mut conn = self.conn.clone();
        let raw: Vec<(String, String)> = self.bounded("nodes", inv.invoke_async(&mut conn)).await?;
        let mut nodes = Vec::with_capacity(raw.len());
        for (id, json) in raw {
            match self.parse_node(&id, &json) {
                Ok(n) => nodes.push(n),
                Err(e) => tracing::warn!(error = %e, "cluster directory: skipping a node"),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// One node, if alive.
    pub async fn node(&self, id: &str) -> Result<Option<NodeInfo>, DirectoryError> {
        let enc = self.name("node id", id)?;
        let mut conn = self.conn.clone();
        let key = self.key("node:", &enc);
        let json: Option<String> = self.bounded("node", conn.get(&key)).await?;
        json.map(|j| self.parse_node(&enc, &j)).transpose()
    }

    /// The room's origin node, if one holds it and is alive.
    pub async fn origin(&self, room: &str) -> Result<Option<String>, DirectoryError> {
        let room = self.name("room", room)?;
        let mut inv = self.inner.scripts.origin.prepare_invoke();
        inv.key(self.key("origin:", &room)).arg(&self.inner.prefix);
        let mut conn = self.conn.clone();
        let holder: Option<String> = self.bounded("origin", inv.invoke_async(&mut conn)).await?;
        holder.map(|h| self.unescape("origin", &h)).transpose()
    }

    /// Takes the room's origin for `node` if nobody holds it, its holder is dead, or `node`
    /// already holds it (then the claim is renewed); otherwise says who holds it. Atomic: of
    /// two nodes claiming at once, one gets `Mine` and the other `Held` by the first.
    pub async fn claim_origin(
        &self,
        room: &str,
        node: &str,
    ) -> Result<OriginClaim, DirectoryError> {
        let room = self.name("room", room)?;
        let id = self.name("node id", node)?;
        let mut inv = self.inner.scripts.claim.prepare_invoke();
        inv.key(self.key("origin:", &room))
            .key(self.key("held:", &id))
            .key(self.key("rooms", ""))
            .arg(&self.inner.prefix)
            .arg(&id)
            .arg(&room)
            .arg(self.ttl_ms());
        let mut conn = self.conn.clone();
        let (mine, holder): (i64, String) = self
            .bounded("claim_origin", inv.invoke_async(&mut conn))
            .await?;
        if mine == 1 {
            Ok(OriginClaim::Mine)
        } else {
            Ok(OriginClaim::Held(self.unescape("origin", &holder)?))
        }
    }

    /// Gives up the room's origin, if `node` holds it (otherwise nothing changes).
    pub async fn release_origin(&self, room: &str, node: &str) -> Result<(), DirectoryError> {
        let room = self.name("room", room)?;
        let id = self.name("node id", node)?;
        let mut inv = self.inner.scripts.release.prepare_invoke();
        inv.key(self.key("origin:", &room))
            .key(self.key("held:", &id))
            .arg(&id)
            .arg(&room);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .bounded("release_origin", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    /// The rooms `node` holds as origin (whether or not Redis still counts the claims: a
    /// claim that another node took is dropped by the next heartbeat).
    pub async fn held(&self, node: &str) -> Result<Vec<String>, DirectoryError> {
        let id = self.name("node id", node)?;
        let mut conn = self.conn.clone();
        let rooms: Vec<String> = self
            .bounded("held", conn.smembers(self.key("held:", &id)))
            .await?;
        let mut rooms = rooms
            .iter()
            .map(|r| self.unescape("held room", r))
            .collect::<Result<Vec<_>, _>>()?;
        rooms.sort();
        Ok(rooms)
    }

    /// Records `node` as an edge of `room`.
    pub async fn add_edge(&self, room: &str, node: &str) -> Result<(), DirectoryError> {
        let room = self.name("room", room)?;
        let id = self.name("node id", node)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .sadd(self.key("edges:", &room), &id)
            .ignore()
            .sadd(self.key("edging:", &id), &room)
            .ignore()
            .pexpire(self.key("edging:", &id), self.ttl_ms())
            .ignore()
            .sadd(self.key("rooms", ""), &room)
            .ignore();
        let mut conn = self.conn.clone();
        let () = self
            .bounded("add_edge", pipe.query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Removes `node` from the edges of `room`.
    pub async fn remove_edge(&self, room: &str, node: &str) -> Result<(), DirectoryError> {
        let room = self.name("room", room)?;
        let id = self.name("node id", node)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .srem(self.key("edges:", &room), &id)
            .ignore()
            .srem(self.key("edging:", &id), &room)
            .ignore();
        let mut conn = self.conn.clone();
        let () = self
            .bounded("remove_edge", pipe.query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// The room's alive edge nodes, sorted (dead ones are pruned).
    pub async fn edges(&self, room: &str) -> Result<Vec<String>, DirectoryError> {
        let room = self.name("room", room)?;
        let mut inv = self.inner.scripts.edges.prepare_invoke();
        inv.key(self.key("edges:", &room)).arg(&self.inner.prefix);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self.bounded("edges", inv.invoke_async(&mut conn)).await?;
        self.unescape_sorted("edge", &ids)
    }

    /// Every room with an alive origin or alive edges, sorted by name.
    pub async fn rooms(&self) -> Result<Vec<RoomEntry>, DirectoryError> {
        let mut inv = self.inner.scripts.rooms.prepare_invoke();
        inv.key(self.key("rooms", "")).arg(&self.inner.prefix);
        let mut conn = self.conn.clone();
        let raw: Vec<(String, String, Vec<String>)> =
            self.bounded("rooms", inv.invoke_async(&mut conn)).await?;
        let mut rooms = Vec::with_capacity(raw.len());
        for (room, origin, edges) in raw {
            rooms.push(RoomEntry {
                room: self.unescape("room", &room)?,
                origin: if origin.is_empty() {
                    None
                } else {
                    Some(self.unescape("origin", &origin)?)
                },
                edges: self.unescape_sorted("edge", &edges)?,
            });
        }
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(rooms)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    fn key(&self, kind: &str, escaped: &str) -> String {
        format!("{}{kind}{escaped}", self.inner.prefix)
    }

    /// Checks an untrusted name and returns its escaped form.
    fn name(&self, what: &'static str, value: &str) -> Result<String, DirectoryError> {
        let bad = |why| DirectoryError::BadName {
            what,
            value: value.chars().take(80).collect(),
            why,
        };
        if value.is_empty() {
            return Err(bad("empty"));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(bad("longer than 256 bytes"));
        }
        Ok(escape(value))
    }

    fn unescape(&self, what: &str, value: &str) -> Result<String, DirectoryError> {
        unescape(value).ok_or_else(|| DirectoryError::BadEntry {
            key: format!("{}…", self.inner.prefix),
            why: format!("{what} {value:?} is not an escaped name"),
        })
    }

    fn unescape_sorted(
        &self,
        what: &str,
        values: &[String],
    ) -> Result<Vec<String>, DirectoryError> {
        let mut out = values
            .iter()
            .map(|v| self.unescape(what, v))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    }

    fn parse_node(&self, escaped_id: &str, json: &str) -> Result<NodeInfo, DirectoryError> {
        serde_json::from_str(json).map_err(|e| DirectoryError::BadEntry {
            key: self.key("node:", escaped_id),
            why: e.to_string(),
        })
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, DirectoryError> {
        match tokio::time::timeout(self.inner.op_limit, op).await {
            Err(_) => Err(DirectoryError::Timeout {
                url: self.inner.url.clone(),
                what,
                limit: self.inner.op_limit,
            }),
            Ok(Err(source)) => Err(DirectoryError::Redis {
                url: self.inner.url.clone(),
                what,
                source,
            }),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// Escapes a name for use in a key or a stored value: bytes outside `[A-Za-z0-9_.-]` become
/// `%XX`. Injective, so distinct names never share a key, and no name can reach into another
/// kind of key or carry a glob character.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for a string `escape` cannot have produced.
pub fn unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = escaped.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The URL without a password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Lua scripts. Keys of other nodes and rooms are built inside from the prefix and the
/// escaped names stored in the sets (fine on a single Redis server, which is what we run).
struct Scripts {
    heartbeat: Script,
    leave: Script,
    nodes: Script,
    origin: Script,
    claim: Script,
    release: Script,
    edges: Script,
    rooms: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            // KEYS: node, nodes, held, edging, rooms. ARGV: prefix, id, ttl_ms, json.
            heartbeat: Script::new(
                r#"
local prefix, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[4], 'PX', ttl)
redis.call('SADD', KEYS[2], id)
for _, room in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local okey = prefix .. 'origin:' .. room
  local holder = redis.call('GET', okey)
  if holder == id then
    redis.call('PEXPIRE', okey, ttl)
    redis.call('SADD', KEYS[5], room)
  elseif not holder then
    redis.call('SET', okey, id, 'PX', ttl)
    redis.call('SADD', KEYS[5], room)
  else
    redis.call('SREM', KEYS[3], room)
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ttl) end
for _, room in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('SADD', prefix .. 'edges:' .. room, id)
  redis.call('SADD', KEYS[5], room)
end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ttl) end
return 1
"#,
            ),
            // KEYS: node, nodes, held, edging. ARGV: prefix, id.
            leave: Script::new(
                r#"
local prefix, id = ARGV[1], ARGV[2]
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], id)
for _, room in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local okey = prefix .. 'origin:' .. room
  if redis.call('GET', okey) == id then redis.call('DEL', okey) end
end
redis.call('DEL', KEYS[3])
for _, room in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('SREM', prefix .. 'edges:' .. room, id)
end
redis.call('DEL', KEYS[4])
return 1
"#,
            ),
            // KEYS: nodes. ARGV: prefix. Returns {{id, json}, ...} of alive nodes.
            nodes: Script::new(
                r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local json = redis.call('GET', ARGV[1] .. 'node:' .. id)
  if json then
    out[#out + 1] = {id, json}
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"#,
            ),
            // KEYS: origin. ARGV: prefix. Returns the holder if alive, else nil.
            origin: Script::new(
                r#"
local holder = redis.call('GET', KEYS[1])
if holder and redis.call('EXISTS', ARGV[1] .. 'node:' .. holder) == 1 then return holder end
return false
"#,
            ),
            // KEYS: origin, held (of the claimer), rooms. ARGV: prefix, id, room, ttl_ms.
            // Returns {1, id} when taken, {0, holder} when an alive other node holds it.
            claim: Script::new(
                r#"
local prefix, id, room, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= id and redis.call('EXISTS', prefix .. 'node:' .. holder) == 1 then
  return {0, holder}
end
if holder and holder ~= id then redis.call('SREM', prefix .. 'held:' .. holder, room) end
redis.call('SET', KEYS[1], id, 'PX', ttl)
redis.call('SADD', KEYS[2], room)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[3], room)
return {1, id}
"#,
            ),
            // KEYS: origin, held. ARGV: id, room.
            release: Script::new(
                r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"#,
            ),
            // KEYS: edges. ARGV: prefix. Returns alive edge ids; prunes dead ones.
            edges: Script::new(
                r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'node:' .. id) == 1 then
    out[#out + 1] = id
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"#,
            ),
            // KEYS: rooms. ARGV: prefix. Returns {{room, origin or '', {edges}}, ...}; rooms
            // with neither an alive origin nor alive edges leave the set.
            rooms: Script::new(
                r#"
local prefix = ARGV[1]
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local holder = redis.call('GET', prefix .. 'origin:' .. room)
  if holder and redis.call('EXISTS', prefix .. 'node:' .. holder) == 0 then holder = false end
  local ekey = prefix .. 'edges:' .. room
  local edges = {}
  for _, id in ipairs(redis.call('SMEMBERS', ekey)) do
    if redis.call('EXISTS', prefix .. 'node:' .. id) == 1 then
      edges[#edges + 1] = id
    else
      redis.call('SREM', ekey, id)
    end
  end
  if holder or #edges > 0 then
    out[#out + 1] = {room, holder or '', edges}
  else
    redis.call('SREM', KEYS[1], room)
  end
end
return out
"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_plain_names_and_is_reversible() {
        assert_eq!(escape("math-7_b.2"), "math-7_b.2");
        for name in [
            "a:b", "*", "room%41", "x y", "教室", "nodes", "a\nb", "%", "node:x",
        ] {
            let e = escape(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.%".contains(&b)),
                "{e}"
            );
            assert_eq!(unescape(&e).as_deref(), Some(name));
        }
        // Injective where a naive join would collide.
        assert_ne!(escape("a:b"), escape("a%3Ab"));
    }

    #[test]
    fn unescape_refuses_what_escape_cannot_produce() {
        assert_eq!(unescape("a:b"), None);
        assert_eq!(unescape("%4"), None);
        assert_eq!(unescape("%zz"), None);
        assert_eq!(unescape("%3a"), None);
        assert_eq!(unescape("%FF"), None); // not UTF-8
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
