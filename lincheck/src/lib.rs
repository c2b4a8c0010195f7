//! Linearizability checking of Shoal's KV with the `porcupine-rs` checker (a port of the checker
//! etcd's robustness suite uses). Test-only: `porcupine-rs` pulls `criterion`, so it lives here and
//! nowhere else.
//!
//! The model is a register per key (`Option<String>`, `None` = missing) with three operations:
//! `get`, `put` and `cas(expected, new)`. Every written value is unique, so Shoal's
//! "`?cas=N` succeeds iff the key's ModifyIndex is N" is the same as "succeeds iff the current value
//! is the value that was read at index N" (and `cas=0` is "iff the key is missing").
//!
//! How outcomes are recorded, as in etcd's robustness suite:
//! - a write that failed in any way (an error status or no answer) is *maybe applied*: its output is
//!   [`Output::Unknown`], which `step` accepts from any state, and its return time is "never"
//!   (`i64::MAX`), so the checker may place it anywhere after its call, or nowhere before the end;
//! - a read that failed is dropped (it returned nothing, so it constrains nothing).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use porcupine_rs::{CheckResult, LinearizationInfo, Model, Operation};

/// The return time of an operation that never returned (a maybe-applied write).
pub const NEVER: i64 = i64::MAX;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Read the key.
    Get,
    /// Write `value`.
    Put(String),
    /// Write `new` iff the key holds `expected` (`None`: iff the key is missing).
    Cas {
        /// The value the client read before (which fixed the ModifyIndex it sent).
        expected: Option<String>,
        /// The value to write.
        new: String,
    },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A read's answer: the value, `None` for a 404.
    Read(Option<String>),
    /// A write's answer: `true` if it was applied (a plain put always answers `true`).
    Written(bool),
    /// A write that failed or timed out: it may or may not have been applied.
    Unknown,
}

/// One operation on one key, with its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOp {
    /// The key.
    pub key: String,
    /// The request.
    pub input: Input,
    /// The answer.
    pub output: Output,
}

/// Who did an operation, for the failure report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpMeta {
    /// The client (one sequential process).
    pub client: u32,
    /// The node it talked to (0-based).
    pub node: usize,
    /// The error, for maybe-applied writes.
    pub error: Option<String>,
}

/// The sequential specification: one register per key.
#[derive(Clone, Debug)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<String>;
    type Op = KvOp;
    type Metadata = OpMeta;

    fn partition_operations(history: &[Operation<Self>]) -> Vec<Vec<Operation<Self>>> {
        let mut by_key: BTreeMap<&str, Vec<Operation<Self>>> = BTreeMap::new();
        for op in history {
            by_key.entry(&op.op.key).or_default().push(op.clone());
        }
        by_key.into_values().collect()
    }

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        match (&op.input, &op.output) {
            (Input::Get, Output::Read(v)) => (v == state, state.clone()),
            (Input::Put(v), Output::Written(true) | Output::Unknown) => (true, Some(v.clone())),
            (Input::Cas { expected, new }, Output::Written(true)) => {
                if expected == state {
                    (true, Some(new.clone()))
                } else {
                    (false, state.clone())
                }
            }
            (Input::Cas { expected, .. }, Output::Written(false)) => (expected != state, state.clone()),
            // If it took effect here, it succeeded iff the value matched.
            (Input::Cas { expected, new }, Output::Unknown) => {
                if expected == state {
                    (true, Some(new.clone()))
                } else {
                    (true, state.clone())
                }
            }
            // A put that answered `false`, or a read/write answer mix-up: nothing explains it.
            _ => (false, state.clone()),
        }
    }

    fn describe_operation(op: &Self::Op) -> String {
        describe(op)
    }
}

/// `get(k) -> v`, `put(k, v) -> true`, `cas(k, old -> new) -> false`, `put(k, v) -> ?`.
pub fn describe(op: &KvOp) -> String {
    let value = |v: &Option<String>| v.as_deref().unwrap_or("<none>").to_string();
    let output = match &op.output {
        Output::Read(v) => value(v),
        Output::Written(b) => b.to_string(),
        Output::Unknown => "? (maybe applied)".to_string(),
    };
    match &op.input {
        Input::Get => format!("get({}) -> {output}", op.key),
        Input::Put(v) => format!("put({}, {v}) -> {output}", op.key),
        Input::Cas { expected, new } => format!("cas({}, {} -> {new}) -> {output}", op.key, value(expected)),
    }
}

/// The history's clock: nanoseconds since the history began, from a monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> i64 {
        self.0.elapsed().as_nanos() as i64
    }
}

/// A history under construction, one per client (merge them with [`History::extend`]).
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The recorded operations.
    pub ops: Vec<Operation<KvModel>>,
}

impl History {
    /// Records an operation that returned at `ret`, or never (`None`: a maybe-applied write, whose
    /// output must then be [`Output::Unknown`]).
    pub fn record(&mut self, meta: OpMeta, op: KvOp, call: i64, ret: Option<i64>) {
        debug_assert_eq!(ret.is_none(), op.output == Output::Unknown, "only unknown outcomes never return");
        self.ops.push(Operation {
            client_id: Some(meta.client),
            call_time: call,
            return_time: ret.unwrap_or(NEVER),
            op,
            metadata: Some(meta),
        });
    }

    /// Adds another client's operations.
    pub fn extend(&mut self, other: History) {
        self.ops.extend(other.ops);
    }

    /// The history to check: a maybe-applied write whose value some completed operation observed
    /// (a read returned it, or a successful CAS expected it) must have taken effect before that
    /// observer returned, so its return time becomes the earliest such return instead of "never".
    /// This is etcd's patch; it only narrows the search, since values are unique.
    pub fn patched(&self) -> Vec<Operation<KvModel>> {
        let mut seen: HashMap<(&str, &str), i64> = HashMap::new();
        for op in &self.ops {
            let observed = match (&op.op.input, &op.op.output) {
                (Input::Get, Output::Read(Some(v))) => v,
                (Input::Cas { expected: Some(v), .. }, Output::Written(true)) => v,
                _ => continue,
            };
            let t = seen.entry((&op.op.key, observed)).or_insert(op.return_time);
            *t = (*t).min(op.return_time);
        }
        let mut ops = self.ops.clone();
        for op in ops.iter_mut().filter(|op| op.op.output == Output::Unknown) {
            let written = match &op.op.input {
                Input::Put(v) | Input::Cas { new: v, .. } => v,
                Input::Get => continue,
            };
            // An observation before the write was even sent is a violation the checker will report.
            if let Some(&t) = seen.get(&(op.op.key.as_str(), written.as_str()))
                && t > op.call_time
            {
                op.return_time = t;
            }
        }
        ops
    }
}

/// Checks `history` (see [`History::patched`]) with a time limit. On `Err` the message explains
/// the failure: for each key whose sub-history is not linearizable, the operations around the point
/// where the longest linearization got stuck. If `dump_dir` is given, the full failing
/// sub-histories and porcupine's HTML visualization are written there.
///
/// The verdict comes from `check_operations_timeout`, never from the `_info_` variant: in
/// porcupine-rs 0.3.0, `check_operations_info_timeout` reports `Illegal` (not `Unknown`) when its
/// timeout fires, because the partitions it cancels answer "not linearizable".
pub fn check(history: &[Operation<KvModel>], timeout: Duration, dump_dir: Option<&Path>) -> Result<(), String> {
    match porcupine_rs::check_operations_timeout::<KvModel>(history, timeout) {
        CheckResult::Ok => Ok(()),
        CheckResult::Unknown => {
            Err(format!("the checker did not finish within {timeout:?} on {} operations: no verdict", history.len()))
        }
        CheckResult::Illegal => Err(explain(history, timeout, dump_dir)),
    }
}

/// The report for a history known not to be linearizable: each key that fails on its own.
fn explain(history: &[Operation<KvModel>], timeout: Duration, dump_dir: Option<&Path>) -> String {
    let mut report = String::from("NOT LINEARIZABLE\n");
    for ops in KvModel::partition_operations(history) {
        if porcupine_rs::check_operations_timeout::<KvModel>(&ops, timeout) != CheckResult::Illegal {
            continue;
        }
        // Only for the partial linearizations: this key is already known to fail.
        let (_, info) = porcupine_rs::check_operations_info_timeout::<KvModel>(&ops, timeout);
        explain_key(&mut report, &info, dump_dir);
    }
    report
}

fn explain_key(report: &mut String, info: &LinearizationInfo<KvModel>, dump_dir: Option<&Path>) {
    let (Some(ops), Some(partials)) = (info.partition_ops.first(), info.partial_linearizations.first()) else {
        return;
    };
    let key = ops.first().map_or("?", |o| o.op.key.as_str());
    let longest = partials.iter().max_by_key(|l| l.len()).cloned().unwrap_or_default();
    let mut state = KvModel::init();
    for &i in &longest {
        state = KvModel::step(&state, &ops[i].op).1;
    }
    let _ = writeln!(
        report,
        "key {key:?}: {} operations; the longest linearization covers {} of them and ends in state {state:?}",
        ops.len(),
        longest.len()
    );
    // Where it got stuck: the earliest-called operation left out that did return.
    let mut in_longest = vec![false; ops.len()];
    for &i in &longest {
        in_longest[i] = true;
    }
    let stuck = (0..ops.len())
        .filter(|&i| !in_longest[i] && ops[i].return_time != NEVER)
        .min_by_key(|&i| ops[i].call_time)
        .map_or(0, |i| ops[i].call_time);
    let window = 1_000_000_000;
    let _ = writeln!(report, "operations called within 1 s of {} (the stuck point):", ms(stuck));
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].call_time, ops[i].return_time));
    for &i in &order {
        let o = &ops[i];
        let near = (o.call_time - stuck).abs() <= window || (o.call_time < stuck && o.return_time >= stuck);
        if near {
            let mark = if in_longest[i] { ' ' } else { '*' };
            let _ = writeln!(report, "  {mark} {}", line(o));
        }
    }
    let _ = writeln!(report, "  (* = not in the longest linearization)");
    if let Some(dir) = dump_dir {
        let name = key.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let text: String = order.iter().map(|&i| line(&ops[i]) + "\n").collect();
        let txt = dir.join(format!("lincheck-{name}.txt"));
        let html = dir.join(format!("lincheck-{name}.html"));
        match std::fs::write(&txt, text).and_then(|()| porcupine_rs::visualize_path::<KvModel>(info, &html)) {
            Ok(()) => {
                let _ =
                    writeln!(report, "full history of {key:?}: {}, visualization: {}", txt.display(), html.display());
            }
            Err(e) => {
                let _ = writeln!(report, "could not write {}: {e}", txt.display());
            }
        }
    }
}

fn ms(t: i64) -> String {
    if t == NEVER { "never".to_string() } else { format!("{:.3}ms", t as f64 / 1e6) }
}

/// One operation as a line: times, client, node, operation.
pub fn line(o: &Operation<KvModel>) -> String {
    let (client, node, error) =
        o.metadata.as_ref().map_or((0, 0, None), |m| (m.client, m.node + 1, m.error.as_deref()));
    let error = error.map(|e| format!("  [{e}]")).unwrap_or_default();
    format!("[{:>12} .. {:>12}] c{client}@node{node} {}{error}", ms(o.call_time), ms(o.return_time), describe(&o.op))
}
