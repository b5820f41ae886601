//! The store's side of search: recording proposals with their trials, the
//! history a sampler reads, and the peer values a pruner compares against.
//! Every SQL string of it is here; the strategies themselves never see the store.

use sqlx::Row;

use super::{from_value_kind, now, sql_err, NewTrial, Store};
use crate::error::Result;

/// One proposed configuration with its trials' states and objective values.
#[derive(Clone, Debug)]
pub struct ProposalRow {
    pub number: i64,
    pub params_json: String,
    /// (seed, state, final objective value when it has one)
    pub trials: Vec<(i64, String, Option<f64>)>,
}

impl ProposalRow {
    /// The mean objective over the seeds that completed with a finite value,
    /// and how many did; None when none did.
    pub fn mean_complete(&self) -> Option<(f64, usize)> {
        let vals: Vec<f64> = self
            .trials
            .iter()
            .filter(|(_, state, _)| state == "complete")
            .filter_map(|(_, _, v)| v.filter(|v| v.is_finite()))
            .collect();
        (!vals.is_empty()).then(|| (vals.iter().sum::<f64>() / vals.len() as f64, vals.len()))
    }

    /// Some seed of it was pruned (by the pruner, or diverged).
    pub fn any_pruned(&self) -> bool {
        self.trials.iter().any(|(_, state, _)| state == "pruned")
    }
}

/// One trial's value at a pruner's epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct RungValue {
    pub trial: i64,
    /// Identifies the trial's configuration among the sweep's (its proposal,
    /// or a grid's swept settings).
    pub configuration: String,
    pub seed: i64,
    /// It has finished (complete).
    pub finished: bool,
    pub value: f64,
}

/// Trial ids for an `IN (...)` list (integers: nothing to quote).
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What recording a proposal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded, with this many new trials.
    Added(usize),
    /// Another process recorded a proposal with this number first: read the
    /// history again and propose anew.
    Taken,
    /// Every trial of it exists already (the sampler proposed a configuration
    /// tried before): nothing was written.
    Duplicate,
}

impl Store {
    /// What a rerun of a search must agree with: how many trials the sweep has
    /// outside any proposal (a grid's), and the proposals recorded for another
    /// space (hash), as (count, one such hash).
    pub async fn search_mismatch(
        &self,
        sweep_id: i64,
        space_hash: &str,
    ) -> Result<(i64, i64, Option<String>)> {
        let (grid,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM trials WHERE sweep_id = $1 AND proposal IS NULL")
                .bind(sweep_id)
                .fetch_one(&self.pool)
                .await
                .map_err(sql_err("reading the sweep's trials"))?;
        let other: Vec<(String,)> = sqlx::query_as(
            "SELECT space_hash FROM proposals WHERE sweep_id = $1 AND space_hash <> $2",
        )
        .bind(sweep_id)
        .bind(space_hash)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading proposals"))?;
        Ok((
            grid,
            other.len() as i64,
            other.into_iter().next().map(|r| r.0),
        ))
    }

    /// The search space of the sweep's recorded spec (empty for a grid, or a
    /// spec this version cannot read).
    pub async fn spec_space(&self, sweep_id: i64) -> Result<crate::search::Space> {
        let (text,): (String,) = sqlx::query_as("SELECT spec_text FROM sweeps WHERE id = $1")
            .bind(sweep_id)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("reading the spec"))?;
        let mut space = crate::search::Space::default();
        let Some(toml::Value::Table(t)) = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|d| d.get("space").cloned())
        else {
            return Ok(space);
        };
        fn walk(prefix: &str, t: &toml::Table, out: &mut crate::search::Space) {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match crate::search::space::parse_distribution(v) {
                    Ok(d) => out.params.push((p, d)),
                    Err(_) => {
                        if let toml::Value::Table(inner) = v {
                            walk(&p, inner, out)
                        }
                    }
                }
            }
        }
        walk("", &t, &mut space);
        Ok(space)
    }

    /// How many configurations the search has proposed.
    pub async fn proposal_count(&self, sweep_id: i64) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM proposals WHERE sweep_id = $1")
            .bind(sweep_id)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("counting proposals"))?;
        Ok(n)
    }

    /// Every proposal of the sweep in order, with its trials (seed, state,
    /// final value of `objective`).
    pub async fn proposal_history(
        &self,
        sweep_id: i64,
        objective: &str,
    ) -> Result<Vec<ProposalRow>> {
        let props: Vec<(i64, String)> = sqlx::query_as(
            "SELECT number, params_json FROM proposals WHERE sweep_id = $1 ORDER BY number",
        )
        .bind(sweep_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading proposals"))?;
        let rows = sqlx::query(
            "SELECT t.proposal, t.seed, t.state, f.value, f.value_kind FROM trials t \
             LEFT JOIN final_metrics f ON f.trial_id = t.id AND f.name = $1 \
             WHERE t.sweep_id = $2 AND t.proposal IS NOT NULL ORDER BY t.proposal, t.seed",
        )
        .bind(objective)
        .bind(sweep_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading the search history"))?;
        let mut out: Vec<ProposalRow> = props
            .into_iter()
            .map(|(number, params_json)| ProposalRow {
                number,
                params_json,
                trials: Vec::new(),
            })
            .collect();
        for r in rows {
            let p: i64 = r.get("proposal");
            let kind: Option<String> = r.get("value_kind");
            let v: Option<f64> = r.get("value");
            let value = kind.map(|k| from_value_kind(v, &k));
            if let Ok(i) = out.binary_search_by_key(&p, |row| row.number) {
                out[i].trials.push((r.get("seed"), r.get("state"), value));
            }
        }
        Ok(out)
    }

    /// Records proposal `number` and its trials in one transaction: nothing of
    /// it exists unless all of it does.
    pub async fn add_proposal(
        &self,
        sweep_id: i64,
        number: i64,
        params_json: &str,
        sampler: &str,
        space_hash: &str,
        trials: &[NewTrial],
    ) -> Result<Recorded> {
        let mut tx = self.begin_write().await?;
        let taken: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO proposals (sweep_id, number, params_json, sampler, space_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sweep_id, number) DO NOTHING RETURNING number",
        )
        .bind(sweep_id)
        .bind(number)
        .bind(params_json)
        .bind(sampler)
        .bind(space_hash)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err("recording a proposal"))?;
        if taken.is_none() {
            tx.rollback().await.map_err(sql_err("rollback"))?;
            return Ok(Recorded::Taken);
        }
        let added = self
            .insert_trials(&mut tx, sweep_id, trials, Some(number))
            .await?;
        if added == 0 {
            tx.rollback().await.map_err(sql_err("rollback"))?;
            return Ok(Recorded::Duplicate);
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Recorded::Added(added))
    }

    /// The trials of the same configuration as `trial_id`, itself included, by
    /// id: the same proposal in a search, the same swept settings in a grid
    /// (its trials differ only in their seed).
    pub async fn configuration_trials(&self, sweep_id: i64, trial_id: i64) -> Result<Vec<i64>> {
        let (proposal,): (Option<i64>,) =
            sqlx::query_as("SELECT proposal FROM trials WHERE id = $1 AND sweep_id = $2")
                .bind(trial_id)
                .bind(sweep_id)
                .fetch_one(&self.pool)
                .await
                .map_err(sql_err("reading a trial's proposal"))?;
        let rows: Vec<(i64,)> = match proposal {
            Some(p) => sqlx::query_as(
                "SELECT id FROM trials WHERE sweep_id = $1 AND proposal = $2 ORDER BY id",
            )
            .bind(sweep_id)
            .bind(p)
            .fetch_all(&self.pool)
            .await,
            // every trial of a sweep has the same setting names; a sibling has
            // no swept setting that differs
            None => sqlx::query_as(
                "SELECT t.id FROM trials t WHERE t.sweep_id = $1 AND t.proposal IS NULL AND NOT EXISTS (\
                 SELECT 1 FROM trial_params a JOIN trial_params b ON b.trial_id = t.id AND b.name = a.name \
                 WHERE a.trial_id = $2 AND a.swept = 1 AND b.value_text <> a.value_text) ORDER BY t.id",
            )
            .bind(sweep_id)
            .bind(trial_id)
            .fetch_all(&self.pool)
            .await,
        }
        .map_err(sql_err("reading a configuration's trials"))?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The first of `trials` that the pruner stopped, as (number, seed, epoch,
    /// the rule's words).
    pub async fn pruned_among(&self, trials: &[i64]) -> Result<Option<(i64, i64, i64, String)>> {
        if trials.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT number, seed, stop_epoch, stop_detail FROM trials WHERE id IN ({}) AND state = 'pruned' AND stop_reason = 'pruned' ORDER BY finished_at, id LIMIT 1",
            id_list(trials)
        );
        let row: Option<(i64, i64, Option<i64>, Option<String>)> = sqlx::query_as(&sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("reading pruned trials"))?;
        Ok(row.map(|(n, s, e, d)| (n, s, e.unwrap_or(0), d.unwrap_or_default())))
    }

    /// `waiting → pruned` for those of `trials` that have not started: their
    /// configuration was pruned on another seed. Returns how many.
    pub async fn prune_waiting(&self, trials: &[i64], detail: &str) -> Result<u64> {
        if trials.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE trials SET state = 'pruned', stop_reason = 'pruned', stop_epoch = 0, stop_detail = $1, finished_at = $2 WHERE id IN ({}) AND state = 'waiting'",
            id_list(trials)
        );
        let r = sqlx::query(&sql)
            .bind(detail)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(sql_err("pruning waiting trials"))?;
        Ok(r.rows_affected())
    }

    /// The values of epoch metric `split.name` at epochs 1..=`epoch` of `trials`,
    /// as (trial, seed, values in epoch order); a trial appears only when it has
    /// reached `epoch`.
    pub async fn values_through(
        &self,
        trials: &[i64],
        epoch: i64,
        split: &str,
        name: &str,
    ) -> Result<Vec<(i64, i64, Vec<f64>)>> {
        if trials.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.id, t.seed, m.epoch, m.value, m.value_kind FROM trials t \
             JOIN epoch_metrics m ON m.trial_id = t.id AND m.split = $1 AND m.name = $2 AND m.epoch <= $3 \
             WHERE t.id IN ({}) AND t.state IN ('running', 'complete', 'pruned') ORDER BY t.id, m.epoch",
            id_list(trials)
        );
        let rows = sqlx::query(&sql)
            .bind(split)
            .bind(name)
            .bind(epoch)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("reading a configuration's values"))?;
        let mut out: Vec<(i64, i64, Vec<f64>)> = Vec::new();
        for r in rows {
            let (id, seed): (i64, i64) = (r.get(0), r.get(1));
            let v = from_value_kind(r.get(3), &r.get::<String, _>(4));
            match out.last_mut() {
                Some(last) if last.0 == id => last.2.push(v),
                _ => out.push((id, seed, vec![v])),
            }
        }
        out.retain(|(_, _, v)| v.len() as i64 == epoch);
        Ok(out)
    }

    /// The value of epoch metric `split.name` at `epoch` of every trial of the
    /// sweep that reached it (running, complete or pruned), with its
    /// configuration, its seed and whether it has finished (complete).
    pub async fn rung_values(
        &self,
        sweep_id: i64,
        epoch: i64,
        split: &str,
        name: &str,
    ) -> Result<Vec<RungValue>> {
        let rows = sqlx::query(
            "SELECT t.id, t.proposal, t.seed, t.state, m.value, m.value_kind FROM trials t \
             JOIN epoch_metrics m ON m.trial_id = t.id AND m.epoch = $1 AND m.split = $2 AND m.name = $3 \
             WHERE t.sweep_id = $4 AND t.state IN ('running', 'complete', 'pruned')",
        )
        .bind(epoch)
        .bind(split)
        .bind(name)
        .bind(sweep_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading values at a rung"))?;
        let mut out: Vec<RungValue> = rows
            .into_iter()
            .map(|r| {
                let proposal: Option<i64> = r.get(1);
                let state: String = r.get(3);
                RungValue {
                    trial: r.get(0),
                    configuration: proposal
                        .map(|p| format!("proposal {p}"))
                        .unwrap_or_default(),
                    seed: r.get(2),
                    finished: state == "complete",
                    value: from_value_kind(r.get(4), &r.get::<String, _>(5)),
                }
            })
            .collect();
        if out.iter().any(|v| v.configuration.is_empty()) {
            // a grid's configurations: their swept settings
            let params: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT p.trial_id, p.name, p.value_text FROM trial_params p \
                 JOIN trials t ON t.id = p.trial_id AND t.sweep_id = $1 AND t.proposal IS NULL \
                 JOIN epoch_metrics m ON m.trial_id = p.trial_id AND m.epoch = $2 AND m.split = $3 AND m.name = $4 \
                 WHERE p.swept = 1 ORDER BY p.trial_id, p.name",
            )
            .bind(sweep_id)
            .bind(epoch)
            .bind(split)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err("reading swept settings"))?;
            let mut keys: std::collections::HashMap<i64, String> = Default::default();
            for (id, k, v) in params {
                let key = keys.entry(id).or_default();
                key.push_str(&format!("{k}={v};"));
            }
            for v in out.iter_mut().filter(|v| v.configuration.is_empty()) {
                v.configuration = keys.remove(&v.trial).unwrap_or_else(|| "grid".into());
            }
        }
        Ok(out)
    }

    /// Pruned trials by the epoch they were stopped at (ASHA's rungs), for
    /// `sweep status`.
    pub async fn pruned_by_epoch(&self, sweep_id: i64) -> Result<Vec<(i64, i64)>> {
        let rows: Vec<(Option<i64>, i64)> = sqlx::query_as(
            "SELECT stop_epoch, COUNT(*) FROM trials WHERE sweep_id = $1 AND state = 'pruned' AND stop_reason = 'pruned' GROUP BY stop_epoch ORDER BY stop_epoch",
        )
        .bind(sweep_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("counting pruned trials"))?;
        Ok(rows.into_iter().map(|(e, n)| (e.unwrap_or(0), n)).collect())
    }
}
