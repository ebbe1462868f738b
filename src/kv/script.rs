//! Lua scripts called by hash, sent whole where the node lacks them.
//!
//! redis-rs's `Script` answers `NOSCRIPT` with `SCRIPT LOAD`, which a
//! cluster client sends to every primary: while a failed primary is still
//! in the topology that fails, and a promoted replica starts with an empty
//! script cache, so a failover would turn every script into an error. Here
//! `NOSCRIPT` is answered with `EVAL` of the body, routed like the call by
//! its first key; that also caches the script on the node that runs it.

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult, ToRedisArgs};

/// A script and its SHA-1, the name Redis caches it under.
pub struct Lua {
    body: &'static str,
    hash: String,
}

impl Lua {
    pub fn new(body: &'static str) -> Self {
        Lua {
            body,
            hash: redis::Script::new(body).get_hash().to_owned(),
        }
    }

    pub fn prepare_invoke(&self) -> Call<'_> {
        Call {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn key<T: ToRedisArgs>(&self, key: T) -> Call<'_> {
        let mut call = self.prepare_invoke();
        call.key(key);
        call
    }

    pub fn arg<T: ToRedisArgs>(&self, arg: T) -> Call<'_> {
        let mut call = self.prepare_invoke();
        call.arg(arg);
        call
    }
}

/// One call of a script: its keys (the first routes it) and arguments.
pub struct Call<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k.as_slice());
        }
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }

    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", &self.lua.hash)
            .query_async(con)
            .await
        {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.command("EVAL", self.lua.body).query_async(con).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrong hash would not fail a call, only cost an EVAL on every one.
    #[test]
    fn the_hash_is_the_bodys_sha1() {
        let lua = Lua::new("return 1");
        assert_eq!(lua.hash, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
