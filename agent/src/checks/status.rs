//! How probe results become a check's status: Consul's `StatusHandler` (`agent/checks/check.go`),
//! pure. See `../shared/reference/discovery.md` §2.5.
//!
//! Both counters start *at* their thresholds, so the first result after a check is (re)started
//! applies at once: a check registered critical turns passing on its first success even with
//! `success_before_passing = 3`. After that:
//! - a passing **or warning** result counts as a success (and resets the failures); it is applied
//!   once the successes reach `success_before_passing`, with its own status (warning stays warning);
//! - a failure counts as a failure (and resets the successes): critical once the failures reach
//!   `failures_before_critical`, else warning once they reach `failures_before_warning`
//!   (which is `failures_before_critical` when 0), else nothing changes.

use shoal_model::catalog::{CheckDef, Health};

/// The thresholds of one check, with Consul's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes before a result that is not a failure is applied.
    pub success_before_passing: u32,
    /// Consecutive failures before a failure is applied as warning.
    pub failures_before_warning: u32,
    /// Consecutive failures before a failure is applied as critical.
    pub failures_before_critical: u32,
}

impl Thresholds {
    /// A definition's thresholds; `failures_before_warning` 0 means `failures_before_critical`.
    pub fn of(def: &CheckDef) -> Self {
        let warning =
            if def.failures_before_warning == 0 { def.failures_before_critical } else { def.failures_before_warning };
        Thresholds {
            success_before_passing: def.success_before_passing,
            failures_before_warning: warning,
            failures_before_critical: def.failures_before_critical,
        }
    }
}

/// One check's consecutive successes and failures. Owned by the check's probe task; a new
/// definition is a new `Counters` (a restarted check applies its first result at once again).
#[derive(Debug, Clone)]
pub struct Counters {
    limits: Thresholds,
    successes: u32,
    failures: u32,
}

impl Counters {
    /// Counters at their thresholds, so the first result applies.
    pub fn new(limits: Thresholds) -> Self {
        Counters { limits, successes: limits.success_before_passing, failures: limits.failures_before_critical }
    }

    /// Counts one probe result; the status to write, or `None` when the stored status (and
    /// output) stay as they are.
    pub fn record(&mut self, result: Health) -> Option<Health> {
        match result {
            Health::Passing | Health::Warning => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                (self.successes >= self.limits.success_before_passing).then_some(result)
            }
            Health::Critical | Health::Maintenance => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.failures >= self.limits.failures_before_critical {
                    Some(Health::Critical)
                } else if self.failures >= self.limits.failures_before_warning {
                    Some(Health::Warning)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Critical, Passing, Warning};

    fn def(success_before_passing: u32, failures_before_warning: u32, failures_before_critical: u32) -> CheckDef {
        CheckDef { success_before_passing, failures_before_warning, failures_before_critical, ..CheckDef::manual() }
    }

    #[test]
    fn counters() {
        // (name, (success_before_passing, failures_before_warning, failures_before_critical), results, applied)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, (u32, u32, u32), Vec<Health>, Vec<Option<Health>>)> = vec![
            (
                "no thresholds: every result applies",
                (0, 0, 0),
                vec![Passing, Critical, Warning],
                vec![Some(Passing), Some(Critical), Some(Warning)],
            ),
            (
                "first success applies at once despite success_before_passing",
                (3, 0, 0),
                vec![Passing],
                vec![Some(Passing)],
            ),
            (
                "first failure applies at once despite failures_before_critical",
                (0, 0, 3),
                vec![Critical],
                vec![Some(Critical)],
            ),
            (
                "after a failure, success_before_passing successes are needed",
                (2, 0, 0),
                vec![Passing, Critical, Passing, Passing, Passing],
                vec![Some(Passing), Some(Critical), None, Some(Passing), Some(Passing)],
            ),
            (
                "failures_before_critical: earlier failures change nothing (warning defaults to critical)",
                (0, 0, 3),
                vec![Passing, Critical, Critical, Critical],
                vec![Some(Passing), None, None, Some(Critical)],
            ),
            (
                "failures_before_warning below critical: warning first, then critical",
                (0, 1, 3),
                vec![Passing, Critical, Critical, Critical],
                vec![Some(Passing), Some(Warning), Some(Warning), Some(Critical)],
            ),
            (
                "failures_before_warning above critical: critical is reached first",
                (0, 5, 2),
                vec![Passing, Critical, Critical],
                vec![Some(Passing), None, Some(Critical)],
            ),
            (
                "a success resets the failures",
                (0, 0, 2),
                vec![Passing, Critical, Passing, Critical, Critical],
                vec![Some(Passing), None, Some(Passing), None, Some(Critical)],
            ),
            (
                "a warning result counts as a success but is written as warning",
                (2, 0, 0),
                vec![Critical, Warning, Warning, Passing],
                vec![Some(Critical), None, Some(Warning), Some(Passing)],
            ),
            (
                "a warning result resets the failures",
                (0, 0, 2),
                vec![Passing, Critical, Warning, Critical],
                vec![Some(Passing), None, Some(Warning), None],
            ),
            (
                "a failure resets the successes",
                (2, 0, 0),
                vec![Critical, Passing, Critical, Passing, Passing],
                vec![Some(Critical), None, Some(Critical), None, Some(Passing)],
            ),
        ];
        for (name, (sbp, fbw, fbc), results, want) in cases {
            let mut c = Counters::new(Thresholds::of(&def(sbp, fbw, fbc)));
            let got: Vec<Option<Health>> = results.iter().map(|r| c.record(*r)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn thresholds_default_warning_to_critical() {
        let cases = [
            ("warning 0 takes critical's", def(0, 0, 4), 4),
            ("warning set is kept", def(0, 2, 4), 2),
            ("all zero", def(0, 0, 0), 0),
        ];
        for (name, d, want) in cases {
            assert_eq!(Thresholds::of(&d).failures_before_warning, want, "{name}");
        }
    }
}
