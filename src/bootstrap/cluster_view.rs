//! What one node says about the cluster, as bootstrap needs it: `CLUSTER NODES` lines parsed into
//! [`NodeLine`]s, plus the slot arithmetic of forming (the even split among masters, ranges).
//!
//! This is deliberately small and separate from the proxy's routing topology: bootstrap needs
//! flags, roles, epochs and open slots of a handful of nodes, once, not a hot-path slot table.
use std::net::{IpAddr, SocketAddr};

use crate::cluster::slot::SLOT_COUNT;

/// An inclusive range of slots, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

impl SlotRange {
    /// How many slots the range holds (at least one).
    pub fn count(self) -> usize {
        usize::from(self.end) - usize::from(self.start) + 1
    }
}

impl std::fmt::Display for SlotRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    /// `ip:port`, or `None` when the node does not know it yet (`:5001@15001`).
    pub addr: Option<SocketAddr>,
    pub flags: Vec<String>,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub config_epoch: u64,
    pub link_connected: bool,
    pub slots: Vec<SlotRange>,
    /// True when the line lists a slot being migrated or imported (`[1234->-id]`).
    pub open_slots: bool,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }
    pub fn in_handshake(&self) -> bool {
        self.has_flag("handshake")
    }
    /// `fail`, `fail?` or `noaddr`: the node is not (yet) healthy in this view.
    pub fn is_troubled(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?") || self.has_flag("noaddr")
    }
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|r| r.count()).sum()
    }
}

/// Parses a `CLUSTER NODES` reply.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<NodeLine, String> {
    let bad = |why: &str| format!("bad CLUSTER NODES line ({why}): {line:?}");
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(bad("fewer than 8 fields"));
    }
    let mut slots = Vec::new();
    let mut open_slots = false;
    for field in &fields[8..] {
        if field.starts_with('[') {
            open_slots = true;
            continue;
        }
        let (start, end) = field.split_once('-').unwrap_or((field, field));
        let parse = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|&n| usize::from(n) < SLOT_COUNT)
        };
        match (parse(start), parse(end)) {
            (Some(start), Some(end)) if start <= end => slots.push(SlotRange { start, end }),
            _ => return Err(bad("bad slot range")),
        }
    }
    Ok(NodeLine {
        id: fields[0].to_string(),
        addr: parse_addr(fields[1]),
        flags: fields[2].split(',').map(str::to_string).collect(),
        master_id: Some(fields[3]).filter(|m| *m != "-").map(str::to_string),
        config_epoch: fields[6].parse().map_err(|_| bad("bad config epoch"))?,
        link_connected: fields[7] == "connected",
        slots,
        open_slots,
    })
}

/// `ip:port@cport[,hostname]` -> `ip:port` (IPv6 addresses come without brackets).
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let host_port = field.split(['@', ',']).next()?;
    let (ip, port) = host_port.rsplit_once(':')?;
    let ip: IpAddr = ip.parse().ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// The slots each of `masters` masters gets, as `redis-cli --cluster create` splits them:
/// 3 masters get 0-5460, 5461-10922, 10923-16383.
pub fn split_slots(masters: usize) -> Vec<SlotRange> {
    assert!(masters > 0 && masters <= SLOT_COUNT);
    let per = SLOT_COUNT as f64 / masters as f64;
    let mut first = 0usize;
    let mut cursor = 0.0f64;
    (0..masters)
        .map(|i| {
            let last = if i == masters - 1 {
                SLOT_COUNT - 1
            } else {
                ((cursor + per - 1.0).round() as usize).min(SLOT_COUNT - 1)
            };
            let range = SlotRange {
                start: first as u16,
                end: last as u16,
            };
            first = last + 1;
            cursor += per;
            range
        })
        .collect()
}

/// Collapses a sorted list of slots into ranges.
pub fn to_ranges(slots: impl IntoIterator<Item = u16>) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for slot in slots {
        match out.last_mut() {
            Some(r) if r.end + 1 == slot => r.end = slot,
            _ => out.push(SlotRange {
                start: slot,
                end: slot,
            }),
        }
    }
    out
}

/// Formats ranges as `0-5460 10923-16383`, or `-` for none.
pub fn format_ranges(ranges: &[SlotRange]) -> String {
    if ranges.is_empty() {
        return "-".to_string();
    }
    ranges
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Redis 7.0.15 (shortened ids), plus a migrating slot.
    const NODES: &str = "\
a1 127.0.0.1:30001@40001 myself,master - 0 1700000000000 1 connected 0-5460 [5461->-b2]
b2 127.0.0.1:30002@40002 master - 0 1700000000000 2 connected 5461-10922 16000
c3 127.0.0.1:30004@40004 slave a1 0 1700000000000 1 connected
d4 :30005@40005 master,fail?,noaddr - 0 0 0 disconnected
e5 127.0.0.1:30006@40006,host.example handshake - 0 0 0 connected
";

    #[test]
    fn parses_cluster_nodes_lines() {
        let lines = parse_cluster_nodes(NODES).unwrap();
        assert_eq!(lines.len(), 5);
        let me = &lines[0];
        assert!(me.is_myself() && me.is_master() && me.open_slots);
        assert_eq!(me.addr, Some("127.0.0.1:30001".parse().unwrap()));
        assert_eq!(
            me.slots,
            vec![SlotRange {
                start: 0,
                end: 5460
            }]
        );
        assert_eq!(me.slot_count(), 5461);
        assert_eq!(lines[1].slots.len(), 2);
        assert_eq!(
            lines[1].slots[1],
            SlotRange {
                start: 16000,
                end: 16000
            }
        );
        assert!(!lines[1].open_slots);
        assert!(lines[2].is_replica());
        assert_eq!(lines[2].master_id.as_deref(), Some("a1"));
        assert_eq!(lines[2].config_epoch, 1);
        assert_eq!(lines[3].addr, None);
        assert!(lines[3].is_troubled() && !lines[3].link_connected);
        assert!(lines[4].in_handshake());
        assert_eq!(lines[4].addr, Some("127.0.0.1:30006".parse().unwrap()));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_cluster_nodes("a b c").is_err());
        assert!(parse_cluster_nodes("a 1.2.3.4:1@2 master - 0 0 x connected").is_err());
        assert!(parse_cluster_nodes("a 1.2.3.4:1@2 master - 0 0 1 connected 9-2").is_err());
        assert!(parse_cluster_nodes("a 1.2.3.4:1@2 master - 0 0 1 connected 16384").is_err());
    }

    #[test]
    fn splits_slots_like_redis_cli() {
        let r = |start, end| SlotRange { start, end };
        assert_eq!(
            split_slots(3),
            vec![r(0, 5460), r(5461, 10922), r(10923, 16383)]
        );
        assert_eq!(split_slots(1), vec![r(0, 16383)]);
        for masters in 1..=20 {
            let split = split_slots(masters);
            assert_eq!(split.iter().map(|r| r.count()).sum::<usize>(), SLOT_COUNT);
            assert!(split.windows(2).all(|w| w[0].end + 1 == w[1].start));
        }
    }

    #[test]
    fn collapses_and_formats_ranges() {
        let ranges = to_ranges([1, 2, 3, 7, 9, 10]);
        assert_eq!(format_ranges(&ranges), "1-3 7 9-10");
        assert_eq!(format_ranges(&[]), "-");
    }
}
