//! Recertification: every agent, workflow and standing grant is vouched for by a human every
//! period; past due plus a grace period it is suspended. An orphan (its owner deactivated) is
//! due at once.

use crate::time::UnixMillis;

const DAY_MS: i64 = 86_400_000;

/// Where an object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Certified within its period.
    Current,
    /// Past due, within the grace period: owners are reminded.
    Due,
    /// Past due and past the grace period: to be suspended.
    Overdue,
}

/// When an object is due and when it is suspended, and where it stands at `now`.
/// `since`: its last recertification, or its creation. `orphaned_at`: when its owner was
/// deactivated (it is then due at that moment, if that is sooner).
pub fn standing(
    since: UnixMillis,
    period_days: u32,
    grace_days: u32,
    orphaned_at: Option<UnixMillis>,
    now: UnixMillis,
) -> (UnixMillis, UnixMillis, Standing) {
    let mut due = UnixMillis(since.0.saturating_add(i64::from(period_days).saturating_mul(DAY_MS)));
    if let Some(o) = orphaned_at
        && o.0 >= since.0
        && o < due
    {
        due = o;
    }
    let suspend = UnixMillis(due.0.saturating_add(i64::from(grace_days).saturating_mul(DAY_MS)));
    let s = if now < due {
        Standing::Current
    } else if now < suspend {
        Standing::Due
    } else {
        Standing::Overdue
    };
    (due, suspend, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_the_period_suspended_after_the_grace_orphans_at_once() {
        let d = |n: i64| UnixMillis(n * DAY_MS);
        assert_eq!(standing(d(0), 90, 7, None, d(89)), (d(90), d(97), Standing::Current));
        assert_eq!(standing(d(0), 90, 7, None, d(90)).2, Standing::Due);
        assert_eq!(standing(d(0), 90, 7, None, d(97)).2, Standing::Overdue);
        // Orphaned on day 10: due then, suspended a grace later.
        assert_eq!(standing(d(0), 90, 7, Some(d(10)), d(12)), (d(10), d(17), Standing::Due));
        assert_eq!(standing(d(0), 90, 0, Some(d(10)), d(10)).2, Standing::Overdue);
        // Recertified after it was orphaned: the orphaning no longer counts.
        assert_eq!(standing(d(20), 90, 7, Some(d(10)), d(30)).2, Standing::Current);
    }
}
