//! The conformance checks, one function each: what a replicable must do between two real
//! nodes.

use chrono::TimeDelta;

use super::{Fixture, Outcome, Sites, err, sha};
use crate::db::dialect::now;
use crate::flags;
use crate::registry::{Registry, SyncState};
use crate::replicator::ReplicableModel;
use crate::storage::ObjectKey;
use crate::verification::VerificationState;

impl Sites<'_> {
    pub(super) async fn created_events_replicate<F: Fixture>(&mut self, fixture: &F) -> Outcome {
        self.start_secondary().await?;
        let models = self.create_all(fixture).await?;
        self.published("created", &models).await?;
        self.eventually("created records reach the secondary", || {
            self.converged(&models)
        })
        .await
    }

    pub(super) async fn updated_events_replicate<F: Fixture>(&mut self, fixture: &F) -> Outcome {
        self.start_secondary().await?;
        let models = self.create_all(fixture).await?;
        self.eventually("created records reach the secondary", || {
            self.converged(&models)
        })
        .await?;
        let updated: Vec<_> = models.iter().step_by(2).cloned().collect();
        for m in &updated {
            fixture.update(&self.app, m, 1).await.map_err(|e| {
                format!("the fixture could not update {}: {e}", m.model_record_id())
            })?;
        }
        self.published("updated", &updated).await?;
        self.eventually("updated bytes reach the secondary", || {
            self.converged(&models)
        })
        .await
    }

    pub(super) async fn deleted_events_replicate<F: Fixture>(&mut self, fixture: &F) -> Outcome {
        self.start_secondary().await?;
        let models = self.create_all(fixture).await?;
        self.eventually("created records reach the secondary", || {
            self.converged(&models)
        })
        .await?;
        let (gone, kept): (Vec<_>, Vec<_>) = models
            .into_iter()
            .partition(|m| m.model_record_id() % 3 == 0);
        let mut paths = Vec::new();
        for m in &gone {
            paths.push(self.secondary_path(&ObjectKey::parse(&Self::key_of(m)?).map_err(err)?));
            fixture.delete(&self.app, m).await.map_err(|e| {
                format!("the fixture could not delete {}: {e}", m.model_record_id())
            })?;
        }
        self.published("deleted", &gone).await?;
        let registry = Registry::new(&self.secondary_db, self.d);
        self.eventually("deleted records leave the secondary", || async {
            for (m, path) in gone.iter().zip(&paths) {
                let id = m.model_record_id();
                if registry.find_by_model_id(id).await.map_err(err)?.is_some() {
                    return Err(format!("deleted record {id} still has a registry row"));
                }
                if path.exists() {
                    return Err(format!(
                        "deleted record {id} still has its copy at {}",
                        path.display()
                    ));
                }
            }
            self.converged(&kept).await
        })
        .await
    }

    pub(super) async fn backfill_picks_up_existing_records<F: Fixture>(
        &mut self,
        fixture: &F,
    ) -> Outcome {
        let models = self.create_all(fixture).await?;
        self.start_secondary().await?;
        self.eventually("existing records are backfilled", || {
            self.converged(&models)
        })
        .await
    }

    pub(super) async fn failed_download_is_retried_with_backoff<F: Fixture>(
        &mut self,
        fixture: &F,
    ) -> Outcome {
        let models = self.create_all(fixture).await?;
        let victim = models
            .iter()
            .find(|m| m.model_record_id() == 1)
            .ok_or("no record 1")?;
        let key = ObjectKey::parse(&Self::key_of(victim)?).map_err(err)?;
        let path = self.app.store.path(&key);
        let aside = path.with_extension("conformance-aside");
        std::fs::rename(&path, &aside).map_err(err)?;
        let failed_at = now();
        self.start_secondary().await?;
        let registry = Registry::new(&self.secondary_db, self.d);
        self.eventually("the download fails and backs off", || async {
            let row = registry
                .find_by_model_id(1)
                .await
                .map_err(err)?
                .ok_or("no registry row yet")?;
            if row.state != SyncState::Failed {
                return Err(format!("record 1 is {}", row.state.as_str()));
            }
            let retry_at = row.retry_at.ok_or("a failed row without retry_at")?;
            if row.retry_count < 1 || retry_at < failed_at + TimeDelta::seconds(15) {
                return Err(format!(
                    "no backoff: retry_count {}, retry_at {retry_at}",
                    row.retry_count
                ));
            }
            if row
                .last_sync_failure
                .as_deref()
                .unwrap_or_default()
                .is_empty()
            {
                return Err("no failure reason recorded".into());
            }
            Ok(())
        })
        .await?;
        std::fs::rename(&aside, &path).map_err(err)?;
        // The backoff elapses.
        Registry::new(&self.secondary_db, self.d)
            .backdate_retries(TimeDelta::seconds(1))
            .await
            .map_err(err)?;
        self.eventually("the retry succeeds", || self.converged(&models))
            .await
    }

    pub(super) async fn verification_succeeds_on_both_sides<F: Fixture>(
        &mut self,
        fixture: &F,
    ) -> Outcome {
        self.start_secondary().await?;
        let models = self.create_all(fixture).await?;
        self.eventually("every copy is synced", || self.converged(&models))
            .await?;
        let registry = Registry::new(&self.secondary_db, self.d);
        self.eventually("both sides verify every object", || async {
            for m in &models {
                let id = m.model_record_id();
                let details = crate::verification::store::load(&self.app.db, self.d, id)
                    .await
                    .map_err(err)?;
                let key = ObjectKey::parse(&Self::key_of(m)?).map_err(err)?;
                let want = sha(&self.app.store.path(&key)).ok_or("no primary object")?;
                if details.verification_state != VerificationState::Succeeded {
                    return Err(format!(
                        "record {id} is {} on the primary",
                        details.verification_state.as_str()
                    ));
                }
                if details.verification_checksum.as_deref() != Some(want.as_slice()) {
                    return Err(format!(
                        "the primary's checksum of {id} is not the SHA-256 of its object"
                    ));
                }
                let row = registry
                    .find_by_model_id(id)
                    .await
                    .map_err(err)?
                    .ok_or("no registry row")?;
                if row.verification_state != VerificationState::Succeeded {
                    return Err(format!(
                        "record {id} is {} on the secondary",
                        row.verification_state.as_str()
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn corrupted_copy_is_detected_and_healed<F: Fixture>(
        &mut self,
        fixture: &F,
    ) -> Outcome {
        self.start_secondary().await?;
        let models = self.create_all(fixture).await?;
        self.eventually("every copy is verified", || async {
            self.converged(&models).await?;
            let registry = Registry::new(&self.secondary_db, self.d);
            for m in &models {
                let row = registry
                    .find_by_model_id(m.model_record_id())
                    .await
                    .map_err(err)?
                    .ok_or("no row")?;
                if row.verification_state != VerificationState::Succeeded {
                    return Err(format!("{} not verified yet", m.model_record_id()));
                }
            }
            Ok(())
        })
        .await?;
        let victim = models
            .iter()
            .find(|m| m.model_record_id() % 10 != 0)
            .ok_or("no non-empty record")?;
        let path = self.secondary_path(&ObjectKey::parse(&Self::key_of(victim)?).map_err(err)?);
        let mut bytes = std::fs::read(&path).map_err(err)?;
        bytes[0] ^= 0x80;
        std::fs::write(&path, &bytes).map_err(err)?;
        // A week passes: the copies are due for the secondary's re-verification.
        Registry::new(&self.secondary_db, self.d)
            .backdate_verifications(TimeDelta::days(8))
            .await
            .map_err(err)?;
        let registry = Registry::new(&self.secondary_db, self.d);
        let id = victim.model_record_id();
        self.eventually("the corruption is detected", || async {
            let row = registry
                .find_by_model_id(id)
                .await
                .map_err(err)?
                .ok_or("no row")?;
            if row.state == SyncState::Failed && row.checksum_mismatch {
                Ok(())
            } else {
                Err(format!(
                    "record {id} is {} / {}",
                    row.state.as_str(),
                    row.verification_state.as_str()
                ))
            }
        })
        .await?;
        // Its resync backoff elapses.
        Registry::new(&self.secondary_db, self.d)
            .backdate_retries(TimeDelta::seconds(1))
            .await
            .map_err(err)?;
        self.eventually("the copy is healed", || self.converged(&models))
            .await
    }

    pub(super) async fn feature_flag_off_publishes_nothing<F: Fixture>(
        &mut self,
        fixture: &F,
    ) -> Outcome {
        flags::set_enabled(&self.app.db, self.d, false)
            .await
            .map_err(err)?;
        let before = self.events().await?;
        let models = self.create_all(fixture).await?;
        if let Some(m) = models.first() {
            fixture.update(&self.app, m, 1).await.map_err(err)?;
            fixture.delete(&self.app, m).await.map_err(err)?;
        }
        let after = self.events().await?;
        if after != before {
            return Err(format!(
                "{} events published with the flag off",
                after - before
            ));
        }
        Ok(())
    }
}
