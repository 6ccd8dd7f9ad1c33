//! The agent loop and the channel source, with a part that records what it
//! was given (no kernel, no root).

use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use strait_agent::{merge_changes, Agent, Changes, ChannelSource, Error, Part, Source, Update};
use strait_model::{parse_str, Change, ChangeSet, ClusterState, Format, Kind, ObjectKey};

fn state(services: &[(&str, u16)]) -> Arc<ClusterState> {
    let mut text = String::new();
    for (name, port) in services {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: {port}}}]}}\n---\n"
        ));
    }
    let loaded = parse_str("t.yaml", &text, Format::Yaml).unwrap();
    Arc::new(
        ClusterState::from_objects(loaded.objects.into_iter().map(|(o, g)| (o, Some(g)))).unwrap(),
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, "default", name)
}

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    All(usize),
    Changes(usize, Vec<Change>),
}

struct Recorder {
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    fail: bool,
}

impl Part for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn sync_all(&mut self, state: &ClusterState) -> strait_agent::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push(Seen::All(state.services.len()));
        Ok(())
    }
    fn sync_changes(
        &mut self,
        old: &ClusterState,
        _new: &ClusterState,
        changes: &ChangeSet,
    ) -> strait_agent::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Changes(old.services.len(), changes.changes.clone()));
        if self.fail {
            return Err(Error::Input {
                message: "refused".into(),
            });
        }
        Ok(())
    }
}

#[test]
fn parts_run_in_order_and_a_failing_part_does_not_stop_the_next() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut agent = Agent::new(vec![
        Box::new(Recorder {
            name: "first",
            seen: seen.clone(),
            fail: true,
        }),
        Box::new(Recorder {
            name: "second",
            seen: seen.clone(),
            fail: false,
        }),
    ]);
    let (a, b) = (state(&[("a", 80)]), state(&[("a", 80), ("b", 81)]));
    assert!(agent
        .apply(&Update {
            state: a.clone(),
            changes: Changes::Everything
        })
        .is_empty());
    let changes = Arc::new(a.diff(&b));
    let errors = agent.apply(&Update {
        state: b.clone(),
        changes: Changes::Set(changes),
    });
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "part first: refused");
    let added = vec![Change::Added(key("b"))];
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Seen::All(1),
            Seen::All(1),
            Seen::Changes(1, added.clone()),
            Seen::Changes(1, added)
        ]
    );
    assert!(Arc::ptr_eq(agent.state().unwrap(), &b));
}

#[test]
fn a_burst_on_the_channel_is_one_update_with_the_merged_changes() {
    let (tx, rx) = channel();
    let mut source = ChannelSource::new(rx);
    let s0 = state(&[("a", 80), ("b", 81)]);
    tx.send(Update {
        state: s0.clone(),
        changes: Changes::Everything,
    })
    .unwrap();
    assert!(matches!(
        source.next().unwrap().unwrap().changes,
        Changes::Everything
    ));
    // b changes and changes back, c comes, a goes: three updates at once.
    let s1 = state(&[("a", 80), ("b", 90)]);
    let s2 = state(&[("a", 80), ("b", 81), ("c", 82)]);
    let s3 = state(&[("b", 81), ("c", 82)]);
    for (old, new) in [(&s0, &s1), (&s1, &s2), (&s2, &s3)] {
        tx.send(Update {
            state: new.clone(),
            changes: Changes::Set(Arc::new(old.diff(new))),
        })
        .unwrap();
    }
    let update = source.next().unwrap().unwrap();
    assert!(Arc::ptr_eq(&update.state, &s3));
    let Changes::Set(set) = update.changes else {
        panic!("a change set")
    };
    assert_eq!(
        set.changes,
        [Change::Added(key("c")), Change::Deleted(key("a"))]
    );
    assert_eq!(
        *set,
        s0.diff(&s3),
        "the merged set is what a full diff finds"
    );
    drop(tx);
    assert!(
        source.next().unwrap().is_none(),
        "the source ends with its sender"
    );
}

#[test]
fn merging_compares_only_the_named_keys() {
    let (a, b) = (
        state(&[("a", 80), ("b", 81)]),
        state(&[("a", 81), ("b", 82)]),
    );
    let only_a = ChangeSet {
        changes: vec![Change::Modified(key("a"))],
    };
    assert_eq!(
        merge_changes(&a, &b, [&only_a]).changes,
        [Change::Modified(key("a"))]
    );
}
