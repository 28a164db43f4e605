//! [`Pipeline`]: commands sent in one round trip, which a Redis Cluster connection can split by
//! hash slot.
//!
//! A Cluster runs a pipeline on one node only, so a pipeline whose commands live in several
//! slots (a job added to one queue's keys and named in the global set of queues; entries
//! deleted by key) is sent as one pipeline per slot, concurrently, and the answers are put back
//! in order. `redis::Pipeline` keeps which commands are ignored to itself, so this type
//! records it alongside.

use redis::cluster_routing::{Route, SlotAddr};
use redis::{Cmd, ToRedisArgs};

/// Commands to send together; the same building calls as `redis::Pipeline`.
#[derive(Clone, Default)]
pub struct Pipeline {
    inner: redis::Pipeline,
    /// Per command: whether its answer is returned (false after [`Pipeline::ignore`]).
    kept: Vec<bool>,
}

/// A new, empty [`Pipeline`].
pub fn pipe() -> Pipeline {
    Pipeline::default()
}

/// Where a command of a split pipeline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Destination {
    /// The node serving this slot, with the other commands of the slot.
    Slot(Route),
    /// Wherever the cluster connection routes it (a command over keys of several slots, which
    /// it splits itself, or one with no key at all in a pipeline without keys).
    Alone(usize),
}

/// A part of a split pipeline: where it goes, and the positions of its commands in the whole.
pub(crate) struct Part {
    pub(crate) destination: Destination,
    pub(crate) positions: Vec<usize>,
    pub(crate) pipeline: redis::Pipeline,
}

impl Pipeline {
    /// Starts a new command.
    pub fn cmd(&mut self, name: &str) -> &mut Self {
        self.inner.cmd(name);
        self.kept.push(true);
        self
    }

    /// Adds a command built elsewhere.
    pub fn add_command(&mut self, cmd: Cmd) -> &mut Self {
        self.inner.add_command(cmd);
        self.kept.push(true);
        self
    }

    /// Adds an argument to the last command.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.inner.arg(arg);
        self
    }

    /// Leaves the last command's answer out of the result.
    pub fn ignore(&mut self) -> &mut Self {
        self.inner.ignore();
        if let Some(last) = self.kept.last_mut() {
            *last = false;
        }
        self
    }

    /// Makes the pipeline a transaction (MULTI/EXEC). A Cluster runs a transaction only
    /// within one slot.
    pub fn atomic(&mut self) -> &mut Self {
        self.inner.atomic();
        self
    }

    /// How many commands it holds.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether it holds no command.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    pub(crate) fn is_transaction(&self) -> bool {
        self.inner.is_transaction()
    }

    /// The pipeline as the client crate takes it.
    pub(crate) fn as_redis(&self) -> &redis::Pipeline {
        &self.inner
    }

    /// Whether command `i`'s answer is returned.
    pub(crate) fn kept(&self, i: usize) -> bool {
        self.kept[i]
    }

    /// The pipeline split by destination, each part keeping every answer (the caller drops
    /// the ignored ones when putting them back in order). Commands without a key join the
    /// first slot's part.
    pub(crate) fn split(&self) -> Vec<Part> {
        let destinations: Vec<Option<Destination>> = self
            .inner
            .cmd_iter()
            .enumerate()
            .map(|(i, cmd)| destination(cmd, i))
            .collect();
        let fallback = destinations
            .iter()
            .flatten()
            .find(|d| matches!(d, Destination::Slot(_)))
            .copied();
        let mut parts: Vec<Part> = Vec::new();
        for (i, (cmd, found)) in self.inner.cmd_iter().zip(destinations).enumerate() {
            let destination = found.or(fallback).unwrap_or(Destination::Alone(i));
            let at = match parts.iter().position(|p| p.destination == destination) {
                Some(at) => at,
                None => {
                    parts.push(Part {
                        destination,
                        positions: Vec::new(),
                        pipeline: redis::Pipeline::new(),
                    });
                    parts.len() - 1
                }
            };
            parts[at].positions.push(i);
            parts[at].pipeline.add_command(cmd.clone());
        }
        parts
    }
}

/// Where command `i` goes: `None` for a command without a key (it can go with any part).
fn destination(cmd: &Cmd, i: usize) -> Option<Destination> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let keys: &[&[u8]] = match name.as_slice() {
        // PUBLISH is routed by its channel, as the client crate does (any node would do).
        b"SCRIPT" | b"PING" | b"MULTI" | b"EXEC" => &[],
        b"EVALSHA" | b"EVAL" | b"FCALL" => {
            let count = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            args.get(3..3 + count).unwrap_or(&[])
        }
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => &args[1..],
        _ => args.get(1..2).unwrap_or(&[]),
    };
    let first = keys.first()?;
    let route = Route::with_key(first, SlotAddr::Master);
    if keys
        .iter()
        .all(|k| Route::with_key(k, SlotAddr::Master) == route)
    {
        Some(Destination::Slot(route))
    } else {
        Some(Destination::Alone(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(p: &Pipeline) -> Vec<Vec<usize>> {
        p.split().into_iter().map(|part| part.positions).collect()
    }

    #[test]
    fn commands_are_grouped_by_slot_in_their_order() {
        let mut p = pipe();
        p.cmd("SADD").arg("keel:queues").arg("a").ignore();
        p.cmd("EVALSHA")
            .arg("sha")
            .arg(1)
            .arg("keel:q:{a}:m")
            .arg(5);
        p.cmd("PUBLISH").arg("keel:queue:added").arg("x a").ignore();
        p.cmd("HGET").arg("keel:q:{a}:h:n").arg("id");
        p.cmd("GET").arg("keel:queues");
        let parts = positions(&p);
        assert_eq!(parts, vec![vec![0, 4], vec![1, 3], vec![2]]);
        assert_eq!(
            (p.len(), p.kept(0), p.kept(1), p.kept(2)),
            (5, false, true, false)
        );
    }

    #[test]
    fn commands_over_several_slots_go_alone_and_keyless_pipelines_stay_whole() {
        let mut p = pipe();
        p.cmd("GET").arg("{x}1");
        p.cmd("UNLINK").arg("{x}2").arg("{y}3");
        p.cmd("UNLINK").arg("{x}4").arg("{x}5");
        assert_eq!(positions(&p), vec![vec![0, 2], vec![1]]);
        let mut keyless = pipe();
        keyless.cmd("SCRIPT").arg("LOAD").arg("return 1");
        keyless.cmd("SCRIPT").arg("LOAD").arg("return 2");
        assert_eq!(positions(&keyless), vec![vec![0], vec![1]]);
    }

    #[test]
    fn a_script_goes_to_its_first_keys_slot() {
        let mut p = pipe();
        p.cmd("EVALSHA")
            .arg("sha")
            .arg(2)
            .arg("{t}a")
            .arg("{t}b")
            .arg("{u}arg");
        p.cmd("EVALSHA").arg("sha").arg(0).arg("{u}arg");
        p.cmd("EVALSHA").arg("sha").arg(2).arg("{v}a").arg("{w}b");
        let parts = p.split();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].destination,
            Destination::Slot(Route::with_key("{t}", SlotAddr::Master))
        );
        // A script without keys goes with the others; one over two slots alone.
        assert_eq!(parts[0].positions, [0, 1]);
        assert_eq!(parts[1].destination, Destination::Alone(2));
    }
}
