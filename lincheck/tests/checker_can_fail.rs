//! The checker and the model on hand-made histories: it must reject what is not linearizable (a
//! stale read, a lost acknowledged write, a CAS answer nothing explains) and accept what is, including
//! maybe-applied writes. Without these, a passing cluster run would prove nothing.

use std::time::Duration;

use shoal_lincheck::{History, Input, KvOp, NEVER, OpMeta, Output, check};

/// One hand-made operation: `(client, key, input, output, call ms, return ms or None)`.
type Step<'a> = (u32, &'a str, Input, Output, i64, Option<i64>);

/// A hand-made history.
fn history(ops: &[Step]) -> History {
    let mut h = History::default();
    for (client, key, input, output, call, ret) in ops {
        let meta = OpMeta { client: *client, node: 0, error: None };
        let op = KvOp { key: key.to_string(), input: input.clone(), output: output.clone() };
        h.record(meta, op, call * 1_000_000, ret.map(|r| r * 1_000_000));
    }
    h
}

fn put(v: &str) -> Input {
    Input::Put(v.to_string())
}

fn cas(expected: Option<&str>, new: &str) -> Input {
    Input::Cas { expected: expected.map(str::to_string), new: new.to_string() }
}

fn read(v: Option<&str>) -> Output {
    Output::Read(v.map(str::to_string))
}

const OK: Output = Output::Written(true);
const FAILED: Output = Output::Written(false);

fn verdict(h: &History) -> Result<(), String> {
    check(&h.patched(), Duration::from_secs(10), None)
}

#[test]
fn a_stale_read_is_rejected_and_a_fresh_one_accepted() {
    let stale = history(&[
        (1, "k", put("a"), OK, 0, Some(10)),
        (1, "k", put("b"), OK, 20, Some(30)),
        // Called after put(b) returned, yet it sees the value before it.
        (2, "k", Input::Get, read(Some("a")), 40, Some(50)),
    ]);
    let err = verdict(&stale).expect_err("a stale read must be rejected");
    assert!(err.contains("NOT LINEARIZABLE") && err.contains("key \"k\""), "{err}");
    println!("{err}");

    let fresh = history(&[
        (1, "k", put("a"), OK, 0, Some(10)),
        (1, "k", put("b"), OK, 20, Some(30)),
        (2, "k", Input::Get, read(Some("b")), 40, Some(50)),
    ]);
    verdict(&fresh).expect("a fresh read is linearizable");

    // Overlapping put(b): either value may be read.
    for seen in ["a", "b"] {
        let concurrent = history(&[
            (1, "k", put("a"), OK, 0, Some(10)),
            (1, "k", put("b"), OK, 20, Some(60)),
            (2, "k", Input::Get, read(Some(seen)), 30, Some(50)),
        ]);
        verdict(&concurrent).unwrap_or_else(|e| panic!("a read concurrent with put(b) may see {seen}: {e}"));
    }
}

#[test]
fn a_lost_acknowledged_write_is_rejected() {
    let lost = history(&[(1, "k", put("a"), OK, 0, Some(10)), (2, "k", Input::Get, read(None), 20, Some(30))]);
    verdict(&lost).expect_err("an acknowledged write that disappears must be rejected");
}

#[test]
fn reads_cannot_go_back_in_time() {
    // Two sequential reads during a slow put: new then old is impossible.
    let back = history(&[
        (1, "k", put("a"), OK, 0, Some(10)),
        (1, "k", put("b"), OK, 20, Some(100)),
        (2, "k", Input::Get, read(Some("b")), 30, Some(40)),
        (2, "k", Input::Get, read(Some("a")), 50, Some(60)),
    ]);
    verdict(&back).expect_err("a read after a read of b must not see a");
}

#[test]
fn cas_answers_must_match_the_state() {
    // The key holds a, so cas(a -> c) must succeed; `false` is unexplainable.
    let wrong_false =
        history(&[(1, "k", put("a"), OK, 0, Some(10)), (2, "k", cas(Some("a"), "c"), FAILED, 20, Some(30))]);
    verdict(&wrong_false).expect_err("a CAS that fails on a matching value must be rejected");

    // The key is missing, so cas(a -> c) must fail; `true` is unexplainable.
    let wrong_true = history(&[(2, "k", cas(Some("a"), "c"), OK, 0, Some(10))]);
    verdict(&wrong_true).expect_err("a CAS that succeeds on a mismatched value must be rejected");

    // Two CAS from the same old value cannot both succeed.
    let double = history(&[
        (1, "k", put("a"), OK, 0, Some(10)),
        (2, "k", cas(Some("a"), "b"), OK, 20, Some(40)),
        (3, "k", cas(Some("a"), "c"), OK, 20, Some(40)),
    ]);
    verdict(&double).expect_err("two CAS from the same value must not both succeed");

    let good = history(&[
        (1, "k", cas(None, "a"), OK, 0, Some(10)),
        (2, "k", cas(None, "x"), FAILED, 20, Some(30)),
        (2, "k", cas(Some("a"), "b"), OK, 40, Some(50)),
        (3, "k", Input::Get, read(Some("b")), 60, Some(70)),
    ]);
    verdict(&good).expect("a correct CAS sequence is linearizable");
}

#[test]
fn a_maybe_applied_write_may_take_effect_late_or_never_but_only_once() {
    let base = [(1, "k", put("a"), OK, 0, Some(10)), (1, "k", put("b"), Output::Unknown, 20, None)];

    // Never applied.
    let never = history(&[base[0].clone(), base[1].clone(), (2, "k", Input::Get, read(Some("a")), 40, Some(50))]);
    verdict(&never).expect("a maybe-applied write may never take effect");

    // Applied long after the client gave up.
    let late = history(&[
        base[0].clone(),
        base[1].clone(),
        (2, "k", Input::Get, read(Some("a")), 40, Some(50)),
        (2, "k", Input::Get, read(Some("b")), 60, Some(70)),
    ]);
    verdict(&late).expect("a maybe-applied write may take effect late");

    // Seen, then gone: not one write.
    let flicker = history(&[
        base[0].clone(),
        base[1].clone(),
        (2, "k", Input::Get, read(Some("b")), 40, Some(50)),
        (2, "k", Input::Get, read(Some("a")), 60, Some(70)),
    ]);
    verdict(&flicker).expect_err("a write seen and then undone must be rejected");

    // A CAS failure explained only by a maybe-applied write in between.
    let explained = history(&[base[0].clone(), base[1].clone(), (2, "k", cas(Some("a"), "c"), FAILED, 40, Some(50))]);
    verdict(&explained).expect("a maybe-applied write can explain a failed CAS");

    // A maybe-applied CAS that did take effect.
    let cas_applied = history(&[
        base[0].clone(),
        (3, "k", cas(Some("a"), "c"), Output::Unknown, 20, None),
        (2, "k", Input::Get, read(Some("c")), 40, Some(50)),
    ]);
    verdict(&cas_applied).expect("a maybe-applied CAS may have taken effect");
}

#[test]
fn an_observed_maybe_applied_write_is_bounded_by_its_first_observer() {
    let h = history(&[
        (1, "k", put("a"), Output::Unknown, 0, None),
        (2, "k", Input::Get, read(Some("a")), 20, Some(30)),
        (2, "k", Input::Get, read(Some("a")), 40, Some(50)),
    ]);
    let patched = h.patched();
    assert_eq!(patched[0].return_time, 30_000_000, "bounded by the first read of its value");
    assert_eq!(h.ops[0].return_time, NEVER);
    verdict(&h).expect("linearizable");

    // A read of the value before the write was sent stays a violation.
    let early =
        history(&[(2, "k", Input::Get, read(Some("a")), 0, Some(10)), (1, "k", put("a"), Output::Unknown, 20, None)]);
    assert_eq!(early.patched()[1].return_time, NEVER);
    verdict(&early).expect_err("a value read before it was written must be rejected");
}

#[test]
fn keys_are_independent() {
    let h = history(&[
        (1, "x", put("a"), OK, 0, Some(10)),
        (2, "y", Input::Get, read(None), 20, Some(30)),
        (2, "x", Input::Get, read(Some("a")), 40, Some(50)),
    ]);
    verdict(&h).expect("other keys do not interfere");

    let bad = history(&[(1, "x", put("a"), OK, 0, Some(10)), (2, "y", Input::Get, read(Some("a")), 20, Some(30))]);
    let err = verdict(&bad).expect_err("a value written to x cannot be read from y");
    assert!(err.contains("key \"y\"") && !err.contains("key \"x\""), "only y fails: {err}");
}

#[test]
fn a_checker_timeout_is_no_verdict_rather_than_a_violation() {
    // Linearizable (each maybe-applied put lands just before the read of its value), but the
    // search has to try the 30 concurrent puts in many orders first.
    let n = 30;
    let mut steps: Vec<Step> =
        (0..n).map(|i| (i, "k", put(&format!("v{i}")), Output::Unknown, i64::from(i), None)).collect();
    for i in 0..n {
        let value = format!("v{}", n - 1 - i);
        let t = 100 + 10 * i64::from(i);
        steps.push((n, "k", Input::Get, Output::Read(Some(value)), t, Some(t + 5)));
    }
    // Not `patched()`: the unbounded puts are what makes the search long.
    let h = history(&steps);
    let err = check(&h.ops, Duration::from_millis(20), None).expect_err("no verdict within 20 ms");
    assert!(err.contains("no verdict") && !err.contains("NOT LINEARIZABLE"), "{err}");
    let (verdict, _) = porcupine_rs::check_operations_info_timeout(&h.ops, Duration::from_millis(20));
    println!("porcupine-rs check_operations_info_timeout on the same history says {verdict:?}");
}
