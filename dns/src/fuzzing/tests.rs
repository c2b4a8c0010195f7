//! The seeds through the server's UDP path: each gets the reply (or the silence) it should, and
//! the invariants hold for all; and the checker itself catches a reply that breaks them.

use hickory_server::proto::op::{Message, ResponseCode};

use super::*;

/// What a seed must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Nothing.
    Nothing,
    /// A reply with this code, and (when given) this many answers and this TC bit.
    Reply(ResponseCode, Option<usize>, Option<bool>),
}

fn reply(code: ResponseCode) -> Want {
    Want::Reply(code, None, None)
}

fn answers(n: usize, tc: bool) -> Want {
    Want::Reply(ResponseCode::NoError, Some(n), Some(tc))
}

#[test]
fn every_seed_gets_its_reply_and_keeps_the_invariants() {
    use ResponseCode::*;
    let wants: Vec<(&str, Want)> = vec![
        ("a", answers(2, false)),
        ("a-edns", answers(2, false)),
        ("a-mixed-case", answers(2, false)),
        ("aaaa", answers(1, false)),
        ("aaaa-big-edns", Want::Reply(NoError, None, Some(true))),
        ("srv-rfc2782", answers(2, false)),
        ("srv-big-classic", answers(3, true)),
        ("srv-big-edns-700", Want::Reply(NoError, None, Some(true))),
        ("srv-hostnames", answers(2, false)),
        ("a-big-classic", answers(3, true)),
        ("tag", answers(1, false)),
        ("rfc2782-tag", answers(3, true)),
        ("node", answers(1, false)),
        ("addr", answers(1, false)),
        ("addr-v6", answers(1, false)),
        ("consul-alias", answers(2, false)),
        ("nxdomain", reply(NXDomain)),
        ("all-critical", reply(NXDomain)),
        ("other-dc", reply(NXDomain)),
        ("nodata", answers(0, false)),
        ("soa", answers(1, false)),
        ("any", answers(2, false)),
        ("axfr", reply(NotImp)),
        ("outside", reply(Refused)),
        ("type-65280", answers(0, false)),
        ("class-chaos", reply(Refused)),
        ("class-chaos-in-domain", reply(NotImp)),
        ("class-any", answers(2, false)),
        ("class-unknown", reply(NotImp)),
        ("edns-small", answers(3, true)),
        ("short", Want::Nothing),
        ("garbage", reply(FormErr)),
        ("truncated", reply(FormErr)),
        ("header-only", reply(FormErr)),
        ("no-question", reply(FormErr)),
        ("edns-v1", reply(BADVERS)),
        ("edns-cookie", answers(2, false)),
        ("two-questions", reply(FormErr)),
        ("notify", reply(NotImp)),
        ("update", reply(NotImp)),
        ("response", Want::Nothing),
        ("pointer-to-question", answers(2, false)),
        ("pointer-into-header", reply(FormErr)),
        ("pointer-loop-self", reply(FormErr)),
        ("pointer-loop-label", reply(FormErr)),
        ("pointer-forward", reply(FormErr)),
        ("label-64", reply(FormErr)),
        ("name-over-255", reply(FormErr)),
        ("name-253", reply(NXDomain)),
        ("found-node-srv", answers(0, false)),
        ("found-srv-edns-956", Want::Reply(NoError, None, Some(true))),
        ("cache-mixed-case-srv-700", Want::Reply(NoError, None, Some(true))),
        ("cache-mixed-case-soa-apex", answers(1, false)),
        ("cache-mixed-case-nxdomain", reply(NXDomain)),
        ("cache-mixed-case-tag-rfc2782", Want::Reply(NoError, None, Some(true))),
    ];
    let seeds = seeds();
    assert_eq!(seeds.len(), wants.len(), "one expectation per seed");
    for ((name, packet), (want_name, want)) in seeds.iter().zip(&wants) {
        assert_eq!(name, want_name, "seeds and expectations in the same order");
        let outcome = check(packet).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        let bytes = match (&outcome, want) {
            (Outcome::Dropped, Want::Nothing) => continue,
            (Outcome::FormErr(b), Want::Reply(..)) | (Outcome::Answered { response: b, .. }, Want::Reply(..)) => b,
            (o, w) => panic!("seed {name}: {o:?}, want {w:?}"),
        };
        let Want::Reply(code, n, tc) = *want else { unreachable!() };
        let m = Message::from_vec(bytes).expect("checked: parses");
        // Compared as numbers: BADVERS and BADSIG are both 16 and decode as BADSIG.
        assert_eq!(u16::from(m.metadata.response_code), u16::from(code), "seed {name}: code");
        if let Some(n) = n {
            assert_eq!(m.answers.len(), n, "seed {name}: answers");
        }
        if let Some(tc) = tc {
            assert_eq!(m.metadata.truncation, tc, "seed {name}: TC");
        }
    }
}

#[test]
fn the_checker_catches_a_broken_reply() {
    let packet = query(9, "web.service.shoal.", RecordType::A, DNSClass::IN, None);
    let request = Request::from_bytes(packet.clone(), CLIENT, Protocol::Udp).expect("parses");
    let Outcome::Answered { response, handler_truncated } = serve_udp(handler(), &packet).expect("served") else {
        panic!("answered")
    };
    check_reply(&request, &response, handler_truncated).expect("the real reply keeps the rules");

    let mut wrong_id = response.clone();
    wrong_id[1] ^= 1;
    let mut no_tc_claimed = response.clone();
    no_tc_claimed[2] |= 0x02;
    let mut m = Message::from_vec(&response).expect("parses");
    let filler = m.answers[0].clone();
    m.answers.extend(std::iter::repeat_n(filler, 40));
    let oversized = m.to_vec().expect("encodes");
    let mut other_question = Message::from_vec(&response).expect("parses");
    other_question.queries[0].set_name(Name::from_ascii("db.service.shoal.").expect("valid"));
    let mut with_opt = Message::from_vec(&response).expect("parses");
    with_opt.set_edns(Edns::new());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an OPT the request did not have", with_opt.to_vec().expect("encodes"), "EDNS in the request: false"),
        ("wrong id", wrong_id, "reply ID"),
        ("TC the handler did not set", no_tc_claimed, "TC is true"),
        ("over 512 bytes", oversized, "budget is 512"),
        ("another question", other_question.to_vec().expect("encodes"), "echoed as"),
        ("not a message", vec![0; 5], "does not parse"),
    ];
    for (case, bytes, want) in cases {
        let err = check_reply(&request, &bytes, handler_truncated).expect_err(case);
        assert!(err.contains(want), "case {case}: {err}");
    }
}

/// What the fuzzer found may depend on the shuffle (which instances are kept when trimming): each
/// such input is checked under many shuffles.
#[test]
fn found_inputs_keep_the_invariants_under_every_shuffle() {
    let found: Vec<(&str, Vec<u8>)> = seeds().into_iter().filter(|(name, _)| name.starts_with("found-")).collect();
    assert!(found.len() >= 2, "the findings are seeds");
    for (name, packet) in found {
        for run in 0..256 {
            check(&packet).unwrap_or_else(|e| panic!("{name}, run {run}: {e}"));
        }
    }
}
