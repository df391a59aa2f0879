//! The bounded retry policy for cluster errors and failed backends, as pure functions: what to
//! do with a reply (or a failure) on the given attempt, and whether a request that was not run
//! waits for a new master (a failover hold, carried out by [`crate::hold`]). The session carries
//! it out.
use crate::backend::BackendError;
use crate::protocol::reply::Redirect;
use std::net::SocketAddr;
use std::time::Duration;

/// How many times one request may be redirected or retried before the client sees the error.
pub const MAX_ATTEMPTS: u32 = 6;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send again to `addr` now; with `asking`, precede it with `ASKING` on the same connection.
    Follow { addr: SocketAddr, asking: bool },
    /// Route again from the (possibly refreshed) topology after `after`; `master` forces the
    /// master even for reads (a replica that is loading).
    Reroute { after: Duration, master: bool },
    /// Stop; the client gets the last reply or error.
    GiveUp,
}

/// Why a retry happened (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    Moved,
    Ask,
    TryAgain,
    ClusterDown,
    Loading,
    Connect,
}

impl RetryReason {
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Moved,
        RetryReason::Ask,
        RetryReason::TryAgain,
        RetryReason::ClusterDown,
        RetryReason::Loading,
        RetryReason::Connect,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Moved => "moved",
            RetryReason::Ask => "ask",
            RetryReason::TryAgain => "tryagain",
            RetryReason::ClusterDown => "clusterdown",
            RetryReason::Loading => "loading",
            RetryReason::Connect => "connect",
        }
    }
}

/// Exponential backoff: 20 ms, 40 ms, ... capped at 500 ms.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((20u64 << attempt.min(5)).min(500))
}

/// The step after a cluster error on attempt `attempt` (0 = the first send).
pub fn after_redirect(redirect: &Redirect, attempt: u32) -> (Step, RetryReason) {
    let reason = match redirect {
        Redirect::Moved { .. } => RetryReason::Moved,
        Redirect::Ask { .. } => RetryReason::Ask,
        Redirect::TryAgain => RetryReason::TryAgain,
        Redirect::ClusterDown => RetryReason::ClusterDown,
        Redirect::Loading => RetryReason::Loading,
    };
    if attempt + 1 >= MAX_ATTEMPTS {
        return (Step::GiveUp, reason);
    }
    let step = match *redirect {
        Redirect::Moved { addr, .. } => Step::Follow {
            addr,
            asking: false,
        },
        Redirect::Ask { addr, .. } => Step::Follow { addr, asking: true },
        Redirect::TryAgain | Redirect::ClusterDown => Step::Reroute {
            after: backoff(attempt),
            master: false,
        },
        Redirect::Loading => Step::Reroute {
            after: backoff(attempt),
            master: true,
        },
    };
    (step, reason)
}

/// The step after a backend failure. Only a request that was never written is retried: one
/// that may have run is not sent twice.
pub fn after_failure(error: BackendError, attempt: u32) -> Step {
    match error {
        BackendError::Connect if attempt + 1 < MAX_ATTEMPTS => Step::Reroute {
            after: backoff(attempt),
            master: false,
        },
        _ => Step::GiveUp,
    }
}

/// Why a request was not run where its slot maps: nothing was written to that node, or the
/// node refused it unrun. Waiting for a new master is then safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// Connecting to the node failed.
    Unreachable,
    /// The topology flags the slot's master failing (`fail?`, or its link down).
    Flagged,
    /// No master serves the slot (a confirmed `fail` leaves its slots so until a promotion).
    Uncovered,
    /// The node answered `-CLUSTERDOWN`: the cluster is failing over.
    ClusterDown,
}

/// What a request not run does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStep {
    /// Wait for a topology change, or at most `recheck`, then route again.
    Wait { recheck: Option<Duration> },
    /// Stop holding: do what it gets without a hold (send it anyway, or the error).
    Release,
}

/// How often an unreachable node is tried again while waiting: it may come back as it was,
/// which no topology change shows. Connecting to a dead node costs a refused connect.
pub const UNREACHABLE_RECHECK: Duration = Duration::from_millis(200);

/// The step for a held request with `remaining` time left on its hold. A flagged master or an
/// uncovered slot only changes with the topology; an unreachable node or a cluster that says
/// CLUSTERDOWN may heal without one, so those are tried again every so often.
pub fn hold_step(why: Unserved, remaining: Duration) -> HoldStep {
    if remaining.is_zero() {
        return HoldStep::Release;
    }
    let recheck = match why {
        Unserved::Unreachable => Some(UNREACHABLE_RECHECK),
        Unserved::ClusterDown => Some(backoff(2)),
        Unserved::Flagged | Unserved::Uncovered => None,
    };
    HoldStep::Wait {
        recheck: recheck.map(|r| r.min(remaining)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn moved_and_ask_follow() {
        assert_eq!(
            after_redirect(
                &Redirect::Moved {
                    slot: 1,
                    addr: addr()
                },
                0
            )
            .0,
            Step::Follow {
                addr: addr(),
                asking: false
            }
        );
        assert_eq!(
            after_redirect(
                &Redirect::Ask {
                    slot: 1,
                    addr: addr()
                },
                2
            )
            .0,
            Step::Follow {
                addr: addr(),
                asking: true
            }
        );
    }

    #[test]
    fn retries_are_bounded() {
        for r in [
            Redirect::Moved {
                slot: 1,
                addr: addr(),
            },
            Redirect::TryAgain,
            Redirect::ClusterDown,
            Redirect::Loading,
        ] {
            assert_eq!(after_redirect(&r, MAX_ATTEMPTS - 1).0, Step::GiveUp);
            assert_ne!(after_redirect(&r, 0).0, Step::GiveUp);
        }
        assert_eq!(
            after_failure(BackendError::Connect, MAX_ATTEMPTS - 1),
            Step::GiveUp
        );
    }

    #[test]
    fn loading_replica_falls_back_to_master() {
        assert!(matches!(
            after_redirect(&Redirect::Loading, 0).0,
            Step::Reroute { master: true, .. }
        ));
    }

    #[test]
    fn maybe_executed_requests_are_not_resent() {
        assert_eq!(after_failure(BackendError::Lost, 0), Step::GiveUp);
        assert_eq!(after_failure(BackendError::Timeout, 0), Step::GiveUp);
        assert!(matches!(
            after_failure(BackendError::Connect, 0),
            Step::Reroute { .. }
        ));
    }

    #[test]
    fn held_requests_wait_for_a_change_and_stop_at_the_deadline() {
        let left = Duration::from_secs(3);
        for why in [Unserved::Flagged, Unserved::Uncovered] {
            assert_eq!(hold_step(why, left), HoldStep::Wait { recheck: None });
        }
        assert_eq!(
            hold_step(Unserved::Unreachable, left),
            HoldStep::Wait {
                recheck: Some(UNREACHABLE_RECHECK)
            }
        );
        assert!(matches!(
            hold_step(Unserved::ClusterDown, Duration::from_millis(5)),
            HoldStep::Wait { recheck: Some(r) } if r == Duration::from_millis(5)
        ));
        for why in [
            Unserved::Unreachable,
            Unserved::Flagged,
            Unserved::Uncovered,
            Unserved::ClusterDown,
        ] {
            assert_eq!(hold_step(why, Duration::ZERO), HoldStep::Release);
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(0) < backoff(1));
        assert_eq!(backoff(30), Duration::from_millis(500));
    }
}
