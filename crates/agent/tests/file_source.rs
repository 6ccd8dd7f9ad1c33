//! The file source against a real directory: every way a manifest changes
//! is seen through inotify, with a deadline and no fixed sleep.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strait_agent::{Changes, FileSource, Source, Update};
use strait_model::controllers::ClusterConfig;
use strait_model::{Change, Kind, ObjectKey};

/// Long enough for a loaded machine; a change is normally seen in microseconds.
const DEADLINE: Duration = Duration::from_secs(10);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("strait-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 80}}]\nendpoints: [{{addresses: [{ip}]}}]\n"
    )
}

fn open(dir: &Path, recursive: bool) -> FileSource {
    let mut source = FileSource::open(
        &[dir.display().to_string()],
        recursive,
        ClusterConfig::default(),
        FileSource::model_reader(),
    )
    .unwrap();
    let first = source.next().unwrap().unwrap();
    assert!(matches!(first.changes, Changes::Everything));
    source
}

fn next(source: &mut FileSource) -> Update {
    source
        .wait_change(Some(DEADLINE))
        .unwrap()
        .expect("a change within the deadline")
}

fn changes(update: &Update) -> Vec<Change> {
    match &update.changes {
        Changes::Set(s) => s.changes.clone(),
        Changes::Everything => panic!("a change set, not everything"),
    }
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, "default", name)
}

fn endpoint(update: &Update, slice: &str) -> String {
    update
        .state
        .endpoint_slices
        .get("default", slice)
        .unwrap()
        .endpoints[0]
        .addresses[0]
        .clone()
}

#[test]
fn an_edit_in_place_gives_the_changed_object_only() {
    let dir = TempDir::new("edit");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    std::fs::write(dir.0.join("b.yaml"), service("b", "10.0.0.2")).unwrap();
    let mut source = open(&dir.0, false);
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.9")).unwrap();
    let update = next(&mut source);
    assert_eq!(
        changes(&update),
        [Change::Modified(key(Kind::EndpointSlice, "a-1"))]
    );
    assert_eq!(endpoint(&update, "a-1"), "10.0.0.9");
    assert_eq!(
        source.stats().files_read,
        1,
        "only the changed file is read again"
    );
}

#[test]
fn an_editor_that_writes_a_temporary_file_and_renames_it_is_seen() {
    let dir = TempDir::new("rename");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, false);
    // As vim and most editors save: a new file renamed over the old one.
    std::fs::write(dir.0.join(".a.yaml.tmp"), service("a", "10.0.0.7")).unwrap();
    std::fs::rename(dir.0.join(".a.yaml.tmp"), dir.0.join("a.yaml")).unwrap();
    let update = next(&mut source);
    assert_eq!(endpoint(&update, "a-1"), "10.0.0.7");
    // And again: the watch is on the directory, not on the replaced inode.
    std::fs::write(dir.0.join(".a.yaml.tmp"), service("a", "10.0.0.8")).unwrap();
    std::fs::rename(dir.0.join(".a.yaml.tmp"), dir.0.join("a.yaml")).unwrap();
    assert_eq!(endpoint(&next(&mut source), "a-1"), "10.0.0.8");
}

#[test]
fn new_and_removed_files_add_and_delete_their_objects() {
    let dir = TempDir::new("addremove");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, false);
    std::fs::write(dir.0.join("b.yaml"), service("b", "10.0.0.2")).unwrap();
    let added = changes(&next(&mut source));
    assert!(
        added.contains(&Change::Added(key(Kind::Service, "b"))),
        "{added:?}"
    );
    assert!(
        added.contains(&Change::Added(key(Kind::EndpointSlice, "b-1"))),
        "{added:?}"
    );
    std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
    let removed = next(&mut source);
    let list = changes(&removed);
    assert!(
        list.contains(&Change::Deleted(key(Kind::Service, "a"))),
        "{list:?}"
    );
    assert!(removed.state.services.get("default", "a").is_none());
    assert!(removed.state.services.get("default", "b").is_some());
}

#[test]
fn files_of_other_names_change_nothing() {
    let dir = TempDir::new("othernames");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, false);
    std::fs::write(dir.0.join("notes.txt"), "not a manifest").unwrap();
    std::fs::write(dir.0.join(".a.yaml.swp"), "vim swap").unwrap();
    // Then a real change: the first update seen is that one.
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.3")).unwrap();
    let update = next(&mut source);
    assert_eq!(
        changes(&update),
        [Change::Modified(key(Kind::EndpointSlice, "a-1"))]
    );
}

#[test]
fn new_subdirectories_are_followed_with_recursive() {
    let dir = TempDir::new("recursive");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, true);
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    // The directory may be seen before its file is written: wait for the Service.
    std::fs::write(dir.0.join("sub/c.yaml"), service("c", "10.0.0.3")).unwrap();
    let mut update = next(&mut source);
    while update.state.services.get("default", "c").is_none() {
        update = next(&mut source);
    }
    // And a change inside it, through the new directory's own watch.
    std::fs::write(dir.0.join("sub/c.yaml"), service("c", "10.0.0.4")).unwrap();
    assert_eq!(endpoint(&next(&mut source), "c-1"), "10.0.0.4");
}

#[test]
fn subdirectories_are_not_read_without_recursive() {
    let dir = TempDir::new("flat");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, false);
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    std::fs::write(dir.0.join("sub/c.yaml"), service("c", "10.0.0.3")).unwrap();
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.5")).unwrap();
    let update = next(&mut source);
    assert_eq!(endpoint(&update, "a-1"), "10.0.0.5");
    assert!(update.state.services.get("default", "c").is_none());
}

#[test]
fn bad_input_changes_nothing_until_fixed() {
    let dir = TempDir::new("bad");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    std::fs::write(dir.0.join("b.yaml"), service("b", "10.0.0.2")).unwrap();
    let mut source = open(&dir.0, false);
    // A port out of range, and then a duplicate of another file's Service.
    std::fs::write(
        dir.0.join("a.yaml"),
        service("a", "10.0.0.1").replace("port: 80}]}", "port: 70000}]}"),
    )
    .unwrap();
    std::fs::write(dir.0.join("c.yaml"), service("b", "10.0.0.3")).unwrap();
    // Nothing comes of either; a later good change does.
    std::fs::write(dir.0.join("c.yaml"), service("c", "10.0.0.3")).unwrap();
    let update = next(&mut source);
    assert!(source.stats().refused >= 1, "{:?}", source.stats());
    assert_eq!(endpoint(&update, "c-1"), "10.0.0.3");
    // a.yaml is still bad: its last good objects stay.
    assert_eq!(
        update
            .state
            .services
            .get("default", "a")
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port,
        80
    );
    assert_eq!(endpoint(&update, "b-1"), "10.0.0.2");
}

#[test]
fn a_burst_comes_as_few_updates_and_ends_in_the_last_state() {
    let dir = TempDir::new("burst");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    let mut source = open(&dir.0, false);
    for i in 0..50 {
        std::fs::write(
            dir.0.join(format!("s{i}.yaml")),
            service(&format!("s{i}"), "10.0.1.1"),
        )
        .unwrap();
    }
    let mut updates = 0;
    let mut last = next(&mut source);
    updates += 1;
    while last.state.services.get("default", "s49").is_none() {
        last = next(&mut source);
        updates += 1;
    }
    assert!(
        updates < 50,
        "{updates} updates for 50 files: bursts are not coalesced"
    );
    assert_eq!(last.state.services.len(), 52, "50 + a + kubernetes");
}

#[test]
fn a_single_file_is_followed_through_its_directory() {
    let dir = TempDir::new("single");
    let file = dir.0.join("cluster.yaml");
    std::fs::write(&file, service("a", "10.0.0.1")).unwrap();
    std::fs::write(dir.0.join("other.yaml"), service("o", "10.0.0.2")).unwrap();
    let mut source = FileSource::open(
        &[file.display().to_string()],
        false,
        ClusterConfig::default(),
        FileSource::model_reader(),
    )
    .unwrap();
    source.next().unwrap();
    assert!(source.state().services.get("default", "o").is_none());
    // Replaced atomically, as the lab writes its cluster file.
    std::fs::write(dir.0.join("cluster.yaml.tmp"), service("a", "10.0.0.6")).unwrap();
    std::fs::rename(dir.0.join("cluster.yaml.tmp"), &file).unwrap();
    let update = next(&mut source);
    assert_eq!(endpoint(&update, "a-1"), "10.0.0.6");
    assert!(update.state.services.get("default", "o").is_none());
}

#[test]
fn objects_of_standard_input_stay_when_files_change() {
    let dir = TempDir::new("stdin");
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.1")).unwrap();
    // A reader that gives what standard input would, under its name.
    let stdin_objects = strait_model::parse_str(
        "<stdin>",
        &service("s", "10.0.0.5"),
        strait_model::Format::Yaml,
    )
    .unwrap()
    .objects;
    let mut model = FileSource::model_reader();
    let reader: strait_agent::Reader = Box::new(move |paths: &[String], recursive: bool| {
        let files: Vec<String> = paths.iter().filter(|p| *p != "-").cloned().collect();
        let mut objects = if files.is_empty() {
            Vec::new()
        } else {
            model(&files, recursive)?
        };
        if paths.iter().any(|p| p == "-") {
            objects.extend(stdin_objects.clone());
        }
        Ok(objects)
    });
    let mut source = FileSource::open(
        &["-".to_string(), dir.0.display().to_string()],
        false,
        ClusterConfig::default(),
        reader,
    )
    .unwrap();
    source.next().unwrap();
    std::fs::write(dir.0.join("a.yaml"), service("a", "10.0.0.2")).unwrap();
    let update = next(&mut source);
    assert_eq!(endpoint(&update, "a-1"), "10.0.0.2");
    assert_eq!(endpoint(&update, "s-1"), "10.0.0.5");
}

#[test]
fn a_change_the_controllers_refuse_changes_nothing() {
    let dir = TempDir::new("refused");
    let with_ip = |name: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n")
    };
    std::fs::write(dir.0.join("a.yaml"), with_ip("a", "10.96.5.5")).unwrap();
    let mut source = open(&dir.0, false);
    let before = source.state().clone();
    // Two Services asking for one address: the controllers refuse it.
    std::fs::write(dir.0.join("c.yaml"), with_ip("c", "10.96.5.5")).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while source.stats().refused == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the conflict was not refused"
        );
        assert!(
            source
                .wait_change(Some(Duration::from_millis(100)))
                .unwrap()
                .is_none(),
            "a refused change gives no snapshot"
        );
    }
    // Then the same file fixed: c comes, a stays as it was.
    std::fs::write(dir.0.join("c.yaml"), with_ip("c", "10.96.5.6")).unwrap();
    let mut update = next(&mut source);
    while update.state.services.get("default", "c").is_none() {
        update = next(&mut source);
    }
    assert!(source.stats().refused >= 1, "{:?}", source.stats());
    assert_eq!(
        update.state.services.get("default", "a"),
        before.services.get("default", "a")
    );
    let list = changes(&update);
    assert!(
        list.contains(&Change::Added(key(Kind::Service, "c"))),
        "{list:?}"
    );
    assert!(!list.iter().any(|c| c.key().name == "a"), "{list:?}");
}
