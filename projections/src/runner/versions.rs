//! A model's versions: which one queries read, which one a rebuild is building beside it, and the
//! switch from one to the other.
//!
//! Each model's tables carry a version suffix and each version has its own checkpoint. A rebuild
//! creates the next version beside the live one and builds it from the start of the feed; when it
//! has caught up, one statement makes it live. Queries read whichever version is live, so they
//! never see a half-built model.

use std::sync::Arc;

use chrono::Utc;
use stay_store::{SqlDatabase, StoreError};

use crate::model::ReadModel;

/// The checkpoint of version `v` of a model.
pub fn checkpoint_name(name: &str, v: i64) -> String {
    format!("projection:{name}:v{v}")
}

/// What the checkpoint names of every version of model `name` start with, and no other model's.
pub fn checkpoint_prefix(name: &str) -> String {
    format!("projection:{name}:v")
}

/// A model's versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The version queries read.
    pub live: i64,
    /// The version being rebuilt beside it.
    pub building: Option<i64>,
}

/// The live and building versions of `name` (live 1 if the model was never started).
pub async fn versions(db: &SqlDatabase, name: &str) -> Result<Versions, StoreError> {
    let rows =
        db.rows("SELECT live_version, building_version FROM projection_state WHERE name = $1", &[name.into()]).await?;
    match rows.first() {
        Some(row) => Ok(Versions { live: row.int("live_version")?, building: row.opt_int("building_version")? }),
        None => Ok(Versions { live: 1, building: None }),
    }
}

/// The models among `models` whose tables are not set up yet (by [`initialize`]), in order.
pub async fn not_set_up(db: &SqlDatabase, models: &[Arc<dyn ReadModel>]) -> Result<Vec<&'static str>, StoreError> {
    let rows = db.rows("SELECT name FROM projection_state", &[]).await?;
    let set_up: Vec<String> = rows.iter().map(|row| row.text("name")).collect::<Result<_, _>>()?;
    Ok(models.iter().map(|model| model.name()).filter(|name| !set_up.iter().any(|s| s == name)).collect())
}

/// Creates a model's state row and first tables, if it has none.
pub async fn initialize(db: &SqlDatabase, model: &dyn ReadModel) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let created = tx
        .run(
            "INSERT INTO projection_state (name, live_version, building_version, updated_at_ms) VALUES ($1, 1, NULL, $2) \
             ON CONFLICT (name) DO NOTHING",
            &[model.name().into(), Utc::now().timestamp_millis().into()],
        )
        .await?;
    if created == 1 {
        tx.batch(&model.create(1)).await?;
    }
    tx.commit().await
}

/// Starts a rebuild of `model` beside its live version; answers the version being built.
pub async fn request_rebuild(db: &SqlDatabase, model: &dyn ReadModel) -> Result<i64, StoreError> {
    initialize(db, model).await?;
    let mut tx = db.begin().await?;
    let rows = tx
        .rows("SELECT live_version, building_version FROM projection_state WHERE name = $1", &[model.name().into()])
        .await?;
    let (live, building) = match rows.first() {
        Some(row) => (row.int("live_version")?, row.opt_int("building_version")?),
        None => (1, None),
    };
    if let Some(building) = building {
        tx.rollback().await?;
        return Ok(building);
    }
    let next = live + 1;
    // Versions before the live one served their last query long ago; the next one may be a leftover.
    for old in (1..live).chain([next]) {
        for table in model.tables(old) {
            tx.batch(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
    }
    tx.batch(&model.create(next)).await?;
    tx.reset_checkpoint(&checkpoint_name(model.name(), next)).await?;
    tx.run(
        "DELETE FROM projection_dead_letters WHERE projection = $1 AND version = $2",
        &[model.name().into(), next.into()],
    )
    .await?;
    tx.run(
        "UPDATE projection_state SET building_version = $2, updated_at_ms = $3 WHERE name = $1",
        &[model.name().into(), next.into(), Utc::now().timestamp_millis().into()],
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Makes the rebuilt version `building` of `name` live, if it is still the one being built;
/// answers whether this call switched.
pub(crate) async fn switch(db: &SqlDatabase, name: &str, building: i64) -> Result<bool, StoreError> {
    let switched = db
        .run(
            "UPDATE projection_state SET live_version = $2, building_version = NULL, updated_at_ms = $3 \
             WHERE name = $1 AND building_version = $2",
            &[name.into(), building.into(), Utc::now().timestamp_millis().into()],
        )
        .await?;
    if switched == 1 {
        tracing::info!(projection = name, version = building, "rebuilt version caught up and is now live");
    }
    Ok(switched == 1)
}

#[cfg(test)]
mod tests {
    use stay_store::Position;

    use super::*;
    use crate::runner::testing::{Fixture, Probe};
    use crate::runner::RunnerConfig;

    #[test]
    fn a_models_prefix_covers_its_versions_and_no_other_models() {
        let prefix = checkpoint_prefix("room");
        assert!(checkpoint_name("room", 1).starts_with(&prefix));
        assert!(checkpoint_name("room", 12).starts_with(&prefix));
        assert!(!checkpoint_name("roomview", 1).starts_with(&prefix));
    }

    #[tokio::test]
    async fn a_model_starts_at_version_1_with_its_tables_created_once() {
        let f = Fixture::new().await;
        assert_eq!(versions(&f.db, "probe").await.expect("versions"), Versions { live: 1, building: None });

        initialize(&f.db, &Probe::default()).await.expect("initialize");
        initialize(&f.db, &Probe::default()).await.expect("initialize again");

        assert_eq!(versions(&f.db, "probe").await.expect("versions"), Versions { live: 1, building: None });
        assert!(f.table_exists("probe_v1").await, "version 1's table");
        assert_eq!(checkpoint_name("probe", 1), "projection:probe:v1");
    }

    #[tokio::test]
    async fn a_rebuild_builds_the_next_version_beside_the_live_one_and_asking_again_answers_the_same() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");

        assert_eq!(request_rebuild(&f.db, &model).await.expect("rebuild"), 2);
        assert_eq!(request_rebuild(&f.db, &model).await.expect("rebuild again"), 2, "one rebuild at a time");

        assert_eq!(versions(&f.db, "probe").await.expect("versions"), Versions { live: 1, building: Some(2) });
        assert!(f.table_exists("probe_v1").await, "the live version stays");
        assert!(f.table_exists("probe_v2").await, "the new version is beside it");
        assert_eq!(f.db.checkpoint(&checkpoint_name("probe", 2)).await.expect("checkpoint"), Position::START);
    }

    #[tokio::test]
    async fn a_rebuilt_version_goes_live_only_once_it_has_caught_up_with_the_live_one() {
        let f = Fixture::new().await;
        let model = Probe::default();
        for room in ["a", "b", "c", "d", "e"] {
            f.note(room, false).await;
        }
        let projector = f.projector(RunnerConfig { batch: 2, ..RunnerConfig::default() });
        let mut lease = projector.lease(&model);
        initialize(&f.db, &model).await.expect("initialize");
        while projector.step(&model, 1).await.expect("step").read > 0 {}
        request_rebuild(&f.db, &model).await.expect("rebuild");

        // Five events at two a batch: three rounds read, and v1 stays live meanwhile.
        for round in 1..=3 {
            projector.round(&model, &mut lease).await.expect("round");
            let now = versions(&f.db, "probe").await.expect("versions");
            assert_eq!(now, Versions { live: 1, building: Some(2) }, "after round {round}");
        }
        // The next round reads nothing new for v2, which has reached v1: the switch.
        projector.round(&model, &mut lease).await.expect("round");
        assert_eq!(versions(&f.db, "probe").await.expect("versions"), Versions { live: 2, building: None });
        assert_eq!(f.rows(2).await.len(), 5, "the new live version holds every event");
        assert!(!switch(&f.db, "probe", 2).await.expect("switch again"), "a switch happens once");
    }

    #[tokio::test]
    async fn the_next_rebuild_drops_the_versions_before_the_live_one() {
        let f = Fixture::new().await;
        let model = Probe::default();
        initialize(&f.db, &model).await.expect("initialize");
        request_rebuild(&f.db, &model).await.expect("rebuild");
        assert!(switch(&f.db, "probe", 2).await.expect("switch"));

        assert_eq!(request_rebuild(&f.db, &model).await.expect("rebuild"), 3);

        assert!(!f.table_exists("probe_v1").await, "v1 served its last query long ago");
        assert!(f.table_exists("probe_v2").await && f.table_exists("probe_v3").await);
    }
}
