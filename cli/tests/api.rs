//! The Consul-compatible KV API on a real single-node cluster: shapes, headers and bad input.

use std::time::Duration;

use shoal_testkit::{Cluster, ClusterOptions};

struct Api {
    base: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    index: Option<u64>,
    body: String,
}

impl Api {
    fn new(c: &Cluster) -> Self {
        let http = shoal_testkit::http_client_builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { base: format!("http://{}", c.nodes[0].http_addr()), http }
    }

    async fn call(&self, method: &str, path: &str, body: Vec<u8>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self.http.request(method, format!("{}{path}", self.base)).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let index = r.headers().get("X-Consul-Index").map(|v| v.to_str().unwrap().parse().unwrap());
        Answer { status, index, body: r.text().await.unwrap() }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_shapes_match_consul() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let api = Api::new(&c);
    assert_eq!(api.call("PUT", "/v1/kv/app/a?flags=42", b"hello".to_vec()).await.body, "true");
    assert_eq!(api.call("PUT", "/v1/kv/app/empty", vec![]).await.body, "true");
    assert_eq!(api.call("PUT", "/v1/kv/app/sub/x", b"1".to_vec()).await.body, "true");

    let a = api.call("GET", "/v1/kv/app/a", vec![]).await;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let idx = a.index.unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"CreateIndex": idx, "ModifyIndex": idx, "LockIndex": 0, "Key": "app/a", "Flags": 42, "Value": "aGVsbG8="}])
    );
    let empty: serde_json::Value =
        serde_json::from_str(&api.call("GET", "/v1/kv/app/empty", vec![]).await.body).unwrap();
    assert_eq!(empty[0]["Value"], serde_json::Value::Null, "empty value is null");
    assert_eq!(api.call("GET", "/v1/kv/app/a?raw", vec![]).await.body, "hello");
    assert_eq!(
        api.call("GET", "/v1/kv/app/?keys&separator=/", vec![]).await.body,
        r#"["app/a","app/empty","app/sub/"]"#
    );
    assert_eq!(api.call("GET", "/v1/kv/app?keys", vec![]).await.body, r#"["app/a","app/empty","app/sub/x"]"#);
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&api.call("GET", "/v1/kv/app?recurse", vec![]).await.body).unwrap();
    assert_eq!(all.len(), 3);

    // cas=0 creates only; cas=N needs the current ModifyIndex.
    assert_eq!(api.call("PUT", "/v1/kv/app/a?cas=0", b"x".to_vec()).await.body, "false");
    assert_eq!(api.call("PUT", &format!("/v1/kv/app/a?cas={}", idx + 100), b"x".to_vec()).await.body, "false");
    assert_eq!(api.call("PUT", &format!("/v1/kv/app/a?cas={idx}"), b"x".to_vec()).await.body, "true");
    assert_eq!(api.call("DELETE", "/v1/kv/app/a?cas=1", vec![]).await.body, "false");
    assert_eq!(api.call("DELETE", "/v1/kv/app?recurse", vec![]).await.body, "true");
    let gone = api.call("GET", "/v1/kv/app?recurse", vec![]).await;
    assert_eq!((gone.status, gone.body.as_str()), (404, ""));
    assert!(gone.index.unwrap() > idx, "a delete moves the prefix's index");

    // Status endpoints.
    let leader: String = serde_json::from_str(&api.call("GET", "/v1/status/leader", vec![]).await.body).unwrap();
    assert_eq!(leader, c.nodes[0].cluster_addr());
    let peers: Vec<String> = serde_json::from_str(&api.call("GET", "/v1/status/peers", vec![]).await.body).unwrap();
    assert_eq!(peers, vec![c.nodes[0].cluster_addr()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let api = Api::new(&c);
    assert_eq!(api.call("PUT", "/v1/kv/k", b"keep".to_vec()).await.body, "true");
    let before = api.call("GET", "/v1/kv/k", vec![]).await.body;

    let big = vec![b'x'; 512 * 1024 + 1];
    // (name, method, path, body, status, message)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("value over 512 KiB", "PUT", "/v1/kv/k", big.clone(), 413, "exceeds the 524288 byte limit"),
        ("value over 512 KiB, new key", "PUT", "/v1/kv/big", big, 413, "exceeds"),
        ("bad cas", "PUT", "/v1/kv/k?cas=abc", b"v".to_vec(), 400, "invalid value for ?cas"),
        ("negative flags", "PUT", "/v1/kv/k?flags=-1", b"v".to_vec(), 400, "invalid value for ?flags"),
        ("missing key", "PUT", "/v1/kv/", b"v".to_vec(), 400, "missing key name"),
        ("sessions", "PUT", "/v1/kv/k?acquire=abc", b"v".to_vec(), 400, "sessions and locks"),
        ("unknown flag value", "GET", "/v1/kv/k?recurse=maybe", vec![], 400, "invalid value for ?recurse"),
        ("stale and consistent", "GET", "/v1/kv/k?stale&consistent", vec![], 400, "cannot use ?stale with ?consistent"),
        ("bad index", "GET", "/v1/kv/k?index=x", vec![], 400, "invalid value for ?index"),
        ("wait without unit", "GET", "/v1/kv/k?index=1&wait=10", vec![], 400, "invalid value for ?wait"),
        ("other datacenter", "GET", "/v1/kv/k?dc=eu-west", vec![], 500, "No path to datacenter"),
        ("delete without key", "DELETE", "/v1/kv/", vec![], 400, "missing key name"),
        (
            "delete cas with recurse",
            "DELETE",
            "/v1/kv/k?recurse&cas=3",
            vec![],
            400,
            "cannot be combined with ?recurse",
        ),
        ("delete bad cas", "DELETE", "/v1/kv/k?cas=-4", vec![], 400, "invalid value for ?cas"),
        ("unknown role", "GET", "/v1/cluster/join-token/admin", vec![], 400, "unknown role"),
    ];
    for (name, method, path, body, status, message) in cases {
        let a = api.call(method, path, body).await;
        assert_eq!(a.status, status, "case {name}: {}", a.body);
        assert!(a.body.contains(message), "case {name}: body {:?}", a.body);
        assert_eq!(a.body.trim().lines().count(), 1, "case {name}: one-line reason");
        if method == "GET" && path.starts_with("/v1/kv") {
            assert!(a.index.unwrap_or(0) >= 1, "case {name}: X-Consul-Index on errors too");
        }
    }
    assert_eq!(api.call("GET", "/v1/kv/k", vec![]).await.body, before, "nothing changed");
    assert_eq!(api.call("GET", "/v1/kv/big", vec![]).await.status, 404, "nothing half-stored");
    let exact = vec![b'y'; 512 * 1024];
    assert_eq!(api.call("PUT", "/v1/kv/exact", exact).await.body, "true", "exactly 512 KiB is allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_headers_on_every_read_and_index_never_decreases() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let client = c.client(0);
    let mut last = 0;
    for i in 0..20 {
        let key = format!("h/{}", i % 3);
        if i % 4 == 3 {
            client.delete(&key, "").await.unwrap();
        } else {
            client.put(&key, b"v", "").await.unwrap();
        }
        for (path, q) in [("h/0", ""), ("h/missing", ""), ("h/", "recurse"), ("h/1", "stale")] {
            let r = client.read(path, q).await.unwrap();
            assert!(r.index >= 1);
            assert_eq!(r.known_leader.as_deref(), Some("true"), "{path}");
            assert!(r.last_contact.is_some(), "{path}");
            if path == "h/" {
                assert!(r.index >= last, "prefix index went back: {} < {last}", r.index);
                last = r.index;
            }
        }
    }
}
