//! The example CSV bundle is the example region; `scheduler import-csv` prints it as JSON.

use std::path::Path;
use std::process::Command;

use scheduler::import::csv::load_dir;
use scheduler::model::{load_region, region_from_str};

#[test]
fn example_bundle_round_trips_to_the_example_region() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let json = load_region(&root.join("region-small.json")).unwrap();
    assert_eq!(load_dir(&root.join("region-small")).unwrap(), json);

    let out = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .arg("import-csv")
        .arg(root.join("region-small"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(region_from_str("stdout", &text).unwrap(), json);

    // A bad cell: the CLI fails naming file, line and field.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root.join("region-small")).unwrap() {
        let p = e.unwrap().path();
        let t = std::fs::read_to_string(&p).unwrap();
        let t = t.replace(
            "z1-eng1,王老师,z1,english,14,4",
            "z1-eng1,王老师,z1,english,many,4",
        );
        std::fs::write(dir.path().join(p.file_name().unwrap()), t).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .arg("import-csv")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("teachers.csv:2:5: field `max_periods_week`"),
        "{err}"
    );
}
