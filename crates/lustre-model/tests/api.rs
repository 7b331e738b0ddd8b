//! Pins the public API other crates are written against (names, field names and
//! signatures), and checks that the parsers handle 10,000-line dumps.

use std::net::IpAddr;
use std::time::Duration;

use lustre_model::*;

type Parser<T> = fn(&str) -> Result<T, ParseError>;

#[test]
fn signatures() {
    let _: fn(&str) -> Result<FsName, ModelError> = FsName::new;
    let _: fn(&str) -> Result<ShareName, ModelError> = ShareName::new;
    let _: fn(&str) -> Result<RelPath, ModelError> = RelPath::parse;
    let _: fn(&str) -> Result<NodemapName, ModelError> = NodemapName::new;
    let _: fn(&str, LNet) -> Result<NidRange, ModelError> = NidRange::from_cidr;
    let _: fn(&str) -> Result<NidRange, ModelError> = parse_nid_range_expr;
    let _: fn(u32) -> Result<ProjectId, ModelError> = ProjectId::new;
    let _: fn(ProjectId, ProjectId) -> Result<ProjectRange, ModelError> = ProjectRange::new;
    let _: fn(&str) -> Result<QuotaReport, ParseError> = parse_lfs_quota;
    let _: Parser<Vec<(u32, QuotaReport)>> = parse_lfs_quota_all;
    let _: fn(&str) -> Result<Grace, ModelError> = parse_grace;
    let _: fn(&str) -> Result<Vec<DfReport>, ParseError> = parse_lfs_df;
    let _: fn(&str) -> Result<Vec<ProjectEntry>, ParseError> = parse_lfs_project;
    let _: fn(&str) -> Result<NodemapState, ParseError> = parse_nodemap_params;
    let _: fn(&str) -> Result<Vec<String>, ParseError> = parse_nodemap_info_list;
    let _: Parser<Vec<(String, HsmState)>> = parse_lfs_hsm_state;
    let _: fn(&str) -> Result<Layout, ParseError> = parse_lfs_getstripe;
    let _: fn(&str) -> Result<LustreVersion, ParseError> = parse_lctl_version;
    let _: fn(u32) -> HsmFlags = HsmFlags::from_bits;

    let fs = FsName::new("testfs").unwrap();
    assert_eq!(fs.as_str(), "testfs");
    let share = ShareName::new("vol").unwrap();
    let path = RelPath::parse("a/b").unwrap().join(&share);
    assert_eq!(path.as_str(), "a/b/vol");
    assert_eq!(path.components().count(), 3);
    assert_eq!(path.file_name(), "vol");
    assert_eq!(path.parent().map(|p| p.to_string()), Some("a/b".into()));
    let _: Result<RelPath, ModelError> = RelPath::from_components(vec![share.clone()]);

    let net = LNet {
        kind: NetType::O2ib,
        num: 3,
    };
    let nid = Nid {
        addr: IpAddr::from([10, 210, 32, 1]),
        net,
    };
    let range = NidRange::from_cidr("10.210.32.0/20", net).unwrap();
    let NidRange { start, end } = range;
    assert!(start <= end);
    assert!(range.contains(&nid) && range.overlaps(&range));
    let expr: String = range.to_lctl_expr().unwrap();
    assert_eq!(parse_nid_range_expr(&expr).unwrap(), range);

    let p = ProjectId::new(1000).unwrap();
    assert_eq!(p.get(), 1000);
    let pr = ProjectRange::new(p, p).unwrap();
    assert!(pr.contains(p) && pr.len() == 1 && pr.iter().count() == 1);

    let sz: ByteSize = "10MiB".parse().unwrap();
    assert_eq!(
        (sz.bytes(), sz.to_kib_ceil(), sz.to_string()),
        (10 << 20, 10240, "10MiB".into())
    );

    let q = QuotaReport {
        usage: QuotaUsage {
            used_bytes: 0,
            inodes: 0,
        },
        limits: QuotaLimits {
            block_soft_bytes: 0,
            block_hard_bytes: 0,
            inode_soft: 0,
            inode_hard: 0,
        },
        block_exceeded: false,
        inode_exceeded: false,
        block_grace: Grace::Remaining(Duration::from_secs(1)),
        inode_grace: Grace::None,
        inaccurate: false,
    };
    assert!(serde_json::to_string(&q).is_ok());
    let _ = [Grace::Expired, Grace::Notify];

    let row = DfRow {
        uuid: String::new(),
        total: 0,
        used: 0,
        available: 0,
        use_percent: 0,
        mount: String::new(),
        target: Some((TargetKind::Ost, 0)),
        flags: String::new(),
    };
    let rep = DfReport {
        rows: vec![row.clone()],
        summary: row,
        mode: DfMode::BlocksKib,
        unavailable: vec![],
    };
    assert_eq!(rep.summary_bytes().map(|s| s.total_bytes), Some(0));

    let _ = ProjectEntry {
        id: 1,
        inherit: true,
        path: String::new(),
    };
    let nm = Nodemap {
        name: "n".into(),
        id: 1,
        ranges: vec![range],
        fileset: Some("/x".into()),
        admin: false,
        trusted: false,
        deny_unknown: true,
        squash_uid: Some(65534),
        squash_gid: None,
        squash_projid: None,
        readonly_mount: None,
        map_mode: None,
        idmaps: vec![IdMap {
            idtype: IdType::Uid,
            client_id: 1,
            fs_id: 2,
        }],
        rbac: None,
        ..Nodemap::default()
    };
    let _ = NodemapState {
        active: true,
        nodemaps: vec![nm],
    };

    let st = HsmState {
        flags: HsmFlags::from_bits(0xd),
        archive_id: Some(1),
    };
    assert_eq!(st.flags.bits(), 0xd);
    assert_eq!(
        st.to_string(),
        "(0x0000000d) released exists archived, archive_id:1"
    );

    let v = parse_lctl_version("version=2.15.4").unwrap();
    let LustreVersion {
        major,
        minor,
        patch,
        fix,
        raw,
    } = v;
    assert_eq!(
        (major, minor, patch, fix, raw.as_str()),
        (2, 15, 4, 0, "2.15.4")
    );

    let vid = VolumeId {
        fs_key: "testfs".into(),
        project: p,
        path,
    };
    assert_eq!(vid.to_string().parse::<VolumeId>().unwrap(), vid);

    let e = ParseError {
        what: "lfs quota",
        line: 3,
        message: "bad".into(),
    };
    assert!(e.to_string().contains("lfs quota") && e.to_string().contains('3'));
}

#[test]
fn large_dumps_parse() {
    let mut nodemaps = String::from("nodemap.active=1\n");
    for i in 0..1000 {
        nodemaps.push_str(&format!(
            "nodemap.t{i}.id={i}\nnodemap.t{i}.fileset=/share/t{i}\nnodemap.t{i}.ranges=\n[\n {{ id: {i}, start_nid: 10.{}.{}.0@tcp, end_nid: 10.{}.{}.255@tcp }}\n]\nnodemap.t{i}.deny_unknown=1\nnodemap.t{i}.squash_uid=65534\n",
            i / 256, i % 256, i / 256, i % 256
        ));
    }
    let st = parse_nodemap_params(&nodemaps).unwrap();
    assert_eq!(st.nodemaps.len(), 1000);

    let mut projects = String::new();
    let mut hsm = String::new();
    let mut df =
        String::from("UUID                   1K-blocks        Used   Available Use% Mounted on\n");
    for i in 0..10_000u32 {
        projects.push_str(&format!("{i:5} P /mnt/lustre/dir {i}\n"));
        hsm.push_str(&format!(
            "/mnt/lustre/f{i}: (0x00000009) exists archived, archive_id:1\n"
        ));
        df.push_str(&format!(
            "fs-OST{i:04x}_UUID   3905069824        3072  3905064704   1% /mnt/fs[OST:{i}]\n"
        ));
    }
    df.push_str("\nfilesystem_summary:   7810139648     4197376  7805936128   1% /mnt/fs\n");
    assert_eq!(parse_lfs_project(&projects).unwrap().len(), 10_000);
    assert_eq!(parse_lfs_hsm_state(&hsm).unwrap().len(), 10_000);
    assert_eq!(
        parse_lfs_df(&df).unwrap().first().map(|r| r.rows.len()),
        Some(10_000)
    );
}
