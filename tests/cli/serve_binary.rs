//! Binary (Hamming) indices over the wire: protocol.md's `BINARY_FLAT`, `BINARY_IVF<n>`,
//! `BINARY_HASH<b>` and `IDMap:`/`IDMap2:` over them, vectors as one number per bit (FAISSx)
//! or packed codes in a `bin` (ours), checked against brute-force Hamming distances, and
//! kept across a kill -9 and restart.

use crate::serve::Server;
use crate::util::*;
use faissx::engine::client::Client;
use faissx::engine::protocol::{self, Msg, Value};
use faissx::engine::ErrorKind;

const D: usize = 64; // bits
const CS: usize = D / 8; // bytes per code

/// `n` random codes of D bits, packed (bit j in byte j/8 at bit j%8, least significant first).
fn codes(n: usize, seed: u64) -> Vec<u8> {
    let bits = lcg_vectors(n, D, seed);
    let mut out = vec![0u8; n * CS];
    for (j, b) in bits.iter().enumerate() {
        if *b > 0.5 {
            out[j / 8] |= 1 << (j % 8);
        }
    }
    out
}

/// Codes as FAISSx sends them: one 0/1 number per bit, a row per vector.
fn as_bits(c: &[u8]) -> Value {
    Value::Array(
        c.chunks(CS)
            .map(|row| Value::Array((0..D).map(|j| Value::from(((row[j / 8] >> (j % 8)) & 1) as f64)).collect()))
            .collect(),
    )
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

fn field<'a>(m: &'a [(Value, Value)], k: &str) -> &'a Value {
    &m.iter().find(|(key, _)| key.as_str() == Some(k)).unwrap_or_else(|| panic!("no {k}")).1
}

/// (ids, distances) of query `q` in a nested search reply.
fn row(r: &Msg, q: usize) -> (Vec<i64>, Vec<u32>) {
    let Some(Value::Array(results)) = r.get("results") else { panic!("no results in {r:?}") };
    let Value::Map(m) = &results[q] else { panic!() };
    let (Value::Array(ids), Value::Array(dis)) = (field(m, "indices"), field(m, "distances")) else { panic!() };
    (ids.iter().map(|v| v.as_i64().unwrap()).collect(), dis.iter().map(|v| v.as_f64().unwrap() as u32).collect())
}

/// Check a k-NN row against brute force: the exact k smallest distances, and each returned
/// id (mapped by `id_of` to its position in `base`) really at that distance. Ties make ids
/// alone ambiguous.
fn check_row(base: &[u8], q: &[u8], k: usize, got: &(Vec<i64>, Vec<u32>), id_of: impl Fn(i64) -> usize) {
    let mut all: Vec<u32> = base.chunks(CS).map(|b| hamming(b, q)).collect();
    all.sort_unstable();
    assert_eq!(got.1, all[..k].to_vec(), "distances");
    for (id, dist) in got.0.iter().zip(&got.1) {
        let pos = id_of(*id);
        assert_eq!(hamming(&base[pos * CS..(pos + 1) * CS], q), *dist, "id {id}");
    }
}

fn search(c: &mut Client, index: &str, q: &[u8], k: u64, extra: Vec<(&str, Value)>) -> Msg {
    let mut f = vec![("index_id", Value::from(index)), ("query_vectors", as_bits(q)), ("k", Value::from(k))];
    f.extend(extra);
    c.call("search", f).unwrap()
}

fn create(c: &mut Client, index: &str, kind: &str) -> Msg {
    c.call(
        "create_index",
        vec![("index_id", Value::from(index)), ("dimension", Value::from(D as u64)), ("index_type", Value::from(kind))],
    )
    .unwrap()
}

#[test]
fn serve_binary_indices() {
    let env = TestEnv::new("serve-binary");
    let data = env.path("data").display().to_string();
    let base = codes(300, 11);
    let queries = codes(4, 12);
    let k = 5;
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);

    // BINARY_FLAT: half the vectors as bits, half as packed codes.
    let r = create(&mut c, "bflat", "BINARY_FLAT");
    assert!(r.flag("is_trained").unwrap());
    c.call("add_vectors", vec![("index_id", Value::from("bflat")), ("vectors", as_bits(&base[..150 * CS]))]).unwrap();
    let r = c
        .call(
            "add_vectors",
            vec![("index_id", Value::from("bflat")), ("vectors", Value::Binary(base[150 * CS..].to_vec()))],
        )
        .unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(300));
    let r = search(&mut c, "bflat", &queries, k, vec![]);
    for q in 0..4 {
        check_row(&base, &queries[q * CS..(q + 1) * CS], k as usize, &row(&r, q), |id| id as usize);
    }
    // binary reply: the same distances as f32 LE
    let rb = search(&mut c, "bflat", &queries, k, vec![("binary", Value::Boolean(true))]);
    let Some(Value::Binary(dis)) = rb.get("distances") else { panic!("{rb:?}") };
    let dis = protocol::f32_from_bytes(dis).unwrap();
    assert_eq!(dis[..k as usize].iter().map(|&x| x as u32).collect::<Vec<_>>(), row(&r, 0).1);
    // range search: every code at Hamming distance < radius
    let q0 = &queries[..CS];
    let radius = 26;
    let r = c
        .call(
            "range_search",
            vec![
                ("index_id", Value::from("bflat")),
                ("query_vectors", as_bits(q0)),
                ("radius", Value::from(radius as f64)),
            ],
        )
        .unwrap();
    let (mut got, _) = row(&r, 0);
    got.sort_unstable();
    let want: Vec<i64> =
        base.chunks(CS).enumerate().filter(|(_, b)| hamming(b, q0) < radius).map(|(i, _)| i as i64).collect();
    assert!(!want.is_empty(), "the radius should catch something");
    assert_eq!(got, want);
    // reconstruct: bits, or the packed code with "binary"
    let r = c.call("reconstruct", vec![("index_id", Value::from("bflat")), ("id", Value::from(7))]).unwrap();
    let Some(Value::Array(bits)) = r.get("vector") else { panic!("{r:?}") };
    let mut packed = vec![0u8; CS];
    for (j, b) in bits.iter().enumerate() {
        packed[j / 8] |= (b.as_u64().unwrap() as u8) << (j % 8);
    }
    assert_eq!((bits.len(), packed), (D, base[7 * CS..8 * CS].to_vec()), "one 0/1 per bit");
    let r = c
        .call(
            "reconstruct_n",
            vec![
                ("index_id", Value::from("bflat")),
                ("start_idx", Value::from(10)),
                ("num_vectors", Value::from(5)),
                ("binary", Value::Boolean(true)),
            ],
        )
        .unwrap();
    assert_eq!(r.get("vectors"), Some(&Value::Binary(base[10 * CS..15 * CS].to_vec())));
    let st =
        c.call("get_index_status", vec![("index_id", Value::from("bflat"))]).unwrap().map("status").unwrap().unwrap();
    assert_eq!((st.str("metric").unwrap(), st.str("faiss_type").unwrap()), (Some("hamming"), Some("IndexBinaryFlat")));

    // bad input: wrong widths, a width that is not whole bytes; nothing changes
    let bad = |c: &mut Client, f: Vec<(&str, Value)>, action: &str| c.call(action, f).unwrap_err().kind();
    let short = Value::Array(vec![Value::Array((0..D - 1).map(|_| Value::from(1)).collect())]);
    assert_eq!(
        bad(&mut c, vec![("index_id", Value::from("bflat")), ("vectors", short)], "add_vectors"),
        ErrorKind::DimensionMismatch
    );
    let odd = Value::Binary(vec![0u8; CS + 1]);
    assert_eq!(
        bad(&mut c, vec![("index_id", Value::from("bflat")), ("vectors", odd)], "add_vectors"),
        ErrorKind::DimensionMismatch
    );
    let err = c
        .call(
            "create_index",
            vec![
                ("index_id", Value::from("b60")),
                ("dimension", Value::from(60)),
                ("index_type", Value::from("BINARY_FLAT")),
            ],
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let r = c.call("get_index_status", vec![("index_id", Value::from("bflat"))]).unwrap();
    assert_eq!(r.uint("ntotal").unwrap(), Some(300));

    // IDMap2 over a binary type: user ids, remove, replace, reconstruct by id
    create(&mut c, "bidm", "IDMap2:BINARY_FLAT");
    let ids: Vec<i64> = (0..300).map(|i| 5000 + i).collect();
    c.call(
        "add_with_ids",
        vec![
            ("index_id", Value::from("bidm")),
            ("vectors", Value::Binary(base.clone())),
            ("ids", protocol::ints_value(&ids)),
        ],
    )
    .unwrap();
    let r = search(&mut c, "bidm", &queries, k, vec![]);
    check_row(&base, &queries[..CS], k as usize, &row(&r, 0), |id| (id - 5000) as usize);
    let r = c
        .call("remove_ids", vec![("index_id", Value::from("bidm")), ("ids", protocol::ints_value(&[5000, 5001, 99]))])
        .unwrap();
    assert_eq!(r.uint("removed").unwrap(), Some(2));
    c.call(
        "replace_vector",
        vec![("index_id", Value::from("bidm")), ("id", Value::from(5010)), ("vector", as_bits(&queries[..CS]))],
    )
    .unwrap();
    let r = search(&mut c, "bidm", &queries[..CS], 1, vec![]);
    assert_eq!(row(&r, 0), (vec![5010], vec![0]), "the replaced vector is the query itself");

    // BINARY_IVF: untrained until trained; nprobe per request and persistent
    let r = create(&mut c, "bivf", "BINARY_IVF4");
    assert!(!r.flag("is_trained").unwrap());
    let add = |c: &mut Client| {
        c.call("add_vectors", vec![("index_id", Value::from("bivf")), ("vectors", Value::Binary(base.clone()))])
    };
    assert_eq!(add(&mut c).unwrap_err().kind(), ErrorKind::NotTrained);
    c.call("train_index", vec![("index_id", Value::from("bivf")), ("training_vectors", as_bits(&base))]).unwrap();
    add(&mut c).unwrap();
    let params = Value::Map(vec![(Value::from("nprobe"), Value::from(4))]);
    let r = search(&mut c, "bivf", &queries, k, vec![("params", params)]);
    for q in 0..4 {
        check_row(&base, &queries[q * CS..(q + 1) * CS], k as usize, &row(&r, q), |id| id as usize);
    }
    c.call(
        "set_parameter",
        vec![("index_id", Value::from("bivf")), ("parameter", Value::from("nprobe")), ("value", Value::from(4))],
    )
    .unwrap();
    let st =
        c.call("get_index_status", vec![("index_id", Value::from("bivf"))]).unwrap().map("status").unwrap().unwrap();
    assert_eq!((st.uint("nlist").unwrap(), st.uint("nprobe").unwrap()), (Some(4), Some(4)));

    // IVF without a direct map reconstructs by id (FAISS's own reconstruct_n for binary IVF
    // would write past its buffer; the shim reads the lists instead)
    let r = c
        .call(
            "reconstruct_n",
            vec![
                ("index_id", Value::from("bivf")),
                ("start_idx", Value::from(20)),
                ("num_vectors", Value::from(6)),
                ("binary", Value::Boolean(true)),
            ],
        )
        .unwrap();
    assert_eq!(r.get("vectors"), Some(&Value::Binary(base[20 * CS..26 * CS].to_vec())));
    let r = c
        .call(
            "reconstruct",
            vec![("index_id", Value::from("bivf")), ("id", Value::from(42)), ("binary", Value::Boolean(true))],
        )
        .unwrap();
    assert_eq!(r.get("vector"), Some(&Value::Binary(base[42 * CS..43 * CS].to_vec())));

    // BINARY_HASH: a stored vector finds itself
    create(&mut c, "bhash", "BINARY_HASH16");
    c.call("add_vectors", vec![("index_id", Value::from("bhash")), ("vectors", Value::Binary(base.clone()))]).unwrap();
    let r = search(&mut c, "bhash", &base[42 * CS..43 * CS], 1, vec![]);
    assert_eq!(row(&r, 0).1, vec![0]);

    // What FAISS cannot do safely is refused with the protocol's codes, and changes nothing.
    let call = |c: &mut Client, action: &str, mut f: Vec<(&str, Value)>, index: &str| {
        f.push(("index_id", Value::from(index)));
        c.call(action, f).unwrap_err().kind()
    };
    assert_eq!(call(&mut c, "reconstruct", vec![("id", Value::from(300))], "bflat"), ErrorKind::NotFound);
    assert_eq!(call(&mut c, "reconstruct", vec![("id", Value::from(-1))], "bflat"), ErrorKind::NotFound);
    assert_eq!(call(&mut c, "reconstruct", vec![("id", Value::from(300))], "bivf"), ErrorKind::NotFound);
    assert_eq!(call(&mut c, "remove_ids", vec![("ids", protocol::ints_value(&[1]))], "bhash"), ErrorKind::Unsupported);
    for (kind, d) in [("BINARY_HASH16", 32u64), ("BINARY_HASH64", 64), ("BHash4x8", 64), ("BINARY_IVF0", 64)] {
        let f = vec![("dimension", Value::from(d)), ("index_type", Value::from(kind))];
        assert_eq!(call(&mut c, "create_index", f, "refused"), ErrorKind::InvalidInput, "{kind} d={d}");
    }
    create(&mut c, "idm-ivf", "IDMap:BINARY_IVF2");
    c.call(
        "train_index",
        vec![("index_id", Value::from("idm-ivf")), ("training_vectors", Value::Binary(base.clone()))],
    )
    .unwrap();
    c.call(
        "add_with_ids",
        vec![
            ("index_id", Value::from("idm-ivf")),
            ("vectors", Value::Binary(base[..10 * CS].to_vec())),
            ("ids", protocol::ints_value(&(100..110).collect::<Vec<i64>>())),
        ],
    )
    .unwrap();
    let rm = vec![("ids", protocol::ints_value(&[100]))];
    assert_eq!(call(&mut c, "remove_ids", rm, "idm-ivf"), ErrorKind::Unsupported);
    let r = search(
        &mut c,
        "idm-ivf",
        &base[3 * CS..4 * CS],
        1,
        vec![("params", Value::Map(vec![(Value::from("nprobe"), Value::from(2))]))],
    );
    assert_eq!(row(&r, 0), (vec![103], vec![0]), "ids unchanged");
    c.call(
        "create_index",
        vec![
            ("index_id", Value::from("floats")),
            ("dimension", Value::from(D as u64)),
            ("index_type", Value::from("Flat")),
        ],
    )
    .unwrap();
    let m = vec![
        ("target_index_id", Value::from("bflat")),
        ("source_index_ids", Value::Array(vec![Value::from("floats")])),
    ];
    assert_eq!(c.call("merge_indices", m).unwrap_err().kind(), ErrorKind::InvalidInput);
    c.call("delete_index", vec![("index_id", Value::from("floats"))]).unwrap();
    c.call("delete_index", vec![("index_id", Value::from("idm-ivf"))]).unwrap();
    // binary flat into binary flat: codes are copied
    create(&mut c, "bcopy", "BINARY_FLAT");
    let m =
        vec![("target_index_id", Value::from("bcopy")), ("source_index_ids", Value::Array(vec![Value::from("bflat")]))];
    assert_eq!(c.call("merge_indices", m).unwrap().uint("ntotal").unwrap(), Some(300));
    let r = search(&mut c, "bcopy", &queries, k, vec![]);
    check_row(&base, &queries[..CS], k as usize, &row(&r, 0), |id| id as usize);
    c.call("reset", vec![("index_id", Value::from("bhash"))]).unwrap();
    assert_eq!(row(&search(&mut c, "bhash", &base[..CS], 1, vec![]), 0).0, vec![-1], "empty after reset");
    c.call("add_vectors", vec![("index_id", Value::from("bhash")), ("vectors", Value::Binary(base.clone()))]).unwrap();

    // kill -9: every acknowledged change is back after a restart
    let before = search(&mut c, "bivf", &queries, k, vec![]);
    let before_idm = search(&mut c, "bidm", &queries, k, vec![]);
    srv.kill9();
    let srv = Server::start(&env, &["--data-dir", &data]);
    let mut c = srv.client(None, None);
    for (name, n) in [("bflat", 300), ("bidm", 298), ("bivf", 300), ("bhash", 300), ("bcopy", 300)] {
        let r = c.call("get_index_status", vec![("index_id", Value::from(name))]).unwrap();
        assert_eq!(r.uint("ntotal").unwrap(), Some(n), "{name}");
    }
    let st =
        c.call("get_index_status", vec![("index_id", Value::from("bivf"))]).unwrap().map("status").unwrap().unwrap();
    assert_eq!((st.uint("nprobe").unwrap(), st.str("metric").unwrap()), (Some(4), Some("hamming")));
    let after = search(&mut c, "bivf", &queries, k, vec![]);
    for q in 0..4 {
        assert_eq!(row(&after, q), row(&before, q), "query {q} after restart");
    }
    assert_eq!(row(&search(&mut c, "bidm", &queries, k, vec![]), 2), row(&before_idm, 2));
    let r = c
        .call(
            "reconstruct",
            vec![("index_id", Value::from("bidm")), ("id", Value::from(5010)), ("binary", Value::Boolean(true))],
        )
        .unwrap();
    assert_eq!(r.get("vector"), Some(&Value::Binary(queries[..CS].to_vec())));
    // The checkpoint is FAISS's own binary index file: `info` reads it, the float commands
    // refuse it by name.
    srv.stop();
    let dir = env.path("data/tenants/default/bflat");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "faiss"))
        .expect("a checkpoint file");
    let file = file.display().to_string();
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", &file])).unwrap();
    assert_eq!((info["metric"].as_str(), info["ntotal"].as_u64()), (Some("hamming"), Some(300)));
    let q = testdata("fashion-mnist/query200.bvecs").display().to_string();
    env.fails(&["search", &file, &q, "-k", "1"], 2, "a binary (Hamming) index");
}

/// Rows of a `.bvecs` file.
fn read_bvecs(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let d = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        out.push(b[at + 4..at + 4 + d].to_vec());
        at += 4 + d;
    }
    out
}

#[test]
fn query_remote_binary_index_from_bvecs() {
    // Binarized fashion-mnist: a pixel is one bit (nonzero → 1), 784 bits per image.
    let env = TestEnv::new("serve-binary-qr");
    let srv = Server::start(&env, &[]);
    let base_p = testdata("fashion-mnist/base5k.bvecs");
    let query_p = testdata("fashion-mnist/query200.bvecs");
    let (base, queries) = (read_bvecs(&base_p), read_bvecs(&query_p));
    let (base_s, query_s) = (base_p.display().to_string(), query_p.display().to_string());
    let qr = |args: &[&str]| -> String {
        let mut all = vec!["query-remote", "--server", &srv.endpoint];
        all.extend_from_slice(args);
        env.ok(&all)
    };
    qr(&["create", "bits", "--dimension", "784", "--index-type", "BINARY_FLAT"]);
    assert!(qr(&["add", "bits", &base_s, "-q"]).contains("\"ntotal\":5000"));
    let hits = parse_jsonl(&qr(&["search", "bits", &query_s, "-k", "3", "--format", "jsonl"]));
    assert_eq!(hits.len(), 200);
    let bit_dist = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| (**x > 0) != (**y > 0)).count() as f64;
    for (qi, ids, dists) in hits.iter().take(50) {
        let mut all: Vec<f64> = base.iter().map(|b| bit_dist(b, &queries[*qi])).collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(dists.iter().map(|d| d.unwrap()).collect::<Vec<_>>(), all[..3].to_vec(), "query {qi}");
        for (id, d) in ids.iter().zip(dists) {
            assert_eq!(bit_dist(&base[*id as usize], &queries[*qi]), d.unwrap(), "query {qi} id {id}");
        }
    }
    // The same rows as packed codes: 784 bytes are a code of 6272 bits.
    qr(&["create", "packed", "--dimension", "6272", "--index-type", "BINARY_FLAT"]);
    qr(&["add", "packed", &base_s, "-q"]);
    let hits = parse_jsonl(&qr(&["search", "packed", &base_s, "-k", "1", "--format", "jsonl"]));
    assert!(hits.iter().take(100).all(|(q, _, d)| d[0] == Some(0.0) && base[*q].len() == 784));
    // A file that fits neither form is refused before anything is sent.
    qr(&["create", "b64", "--dimension", "64", "--index-type", "BINARY_FLAT"]);
    env.fails(
        &["query-remote", "--server", &srv.endpoint, "add", "b64", &base_s],
        2,
        "do not fit a binary index of d=64 bits",
    );
}

#[test]
fn serve_reconstructs_from_float_ivf_without_direct_map() {
    let env = TestEnv::new("serve-ivf-reconstruct");
    let srv = Server::start(&env, &[]);
    let mut c = srv.client(None, None);
    let d = 8;
    let base = lcg_vectors(200, d, 21);
    c.create_index("ivf", d, "IVF4", None).unwrap();
    c.train("ivf", &base, d).unwrap();
    c.add_vectors("ivf", &base, d, None, None).unwrap();
    c.create_index("base", d, "IVF4", None).unwrap();
    c.create_index("idm", d, "IDMap2:base", None).unwrap();
    c.train("idm", &base, d).unwrap();
    let ids: Vec<i64> = (0..200).map(|i| 7000 + i).collect();
    c.add_vectors("idm", &base, d, Some(&ids), None).unwrap();
    for (index, key, row) in [("ivf", 17, 17), ("ivf", 199, 199), ("idm", 7033, 33)] {
        let r = c.call("reconstruct", vec![("index_id", Value::from(index)), ("id", Value::from(key))]).unwrap();
        let Some(Value::Array(v)) = r.get("vector") else { panic!("{r:?}") };
        let v: Vec<f32> = v.iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(v, base[row * d..(row + 1) * d].to_vec(), "{index} id {key}");
    }
    for (index, key) in [("ivf", 200), ("idm", 33)] {
        let e = c.call("reconstruct", vec![("index_id", Value::from(index)), ("id", Value::from(key))]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{index} id {key}: {e}");
    }
}
