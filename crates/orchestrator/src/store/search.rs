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

    /// The value of epoch metric `split.name` at `epoch` of every other trial of
    /// the sweep with this seed that reached it (running, complete or pruned),
    /// with whether that trial has finished (complete).
    pub async fn peer_values(
        &self,
        sweep_id: i64,
        trial_id: i64,
        seed: i64,
        epoch: i64,
        split: &str,
        name: &str,
    ) -> Result<Vec<(bool, f64)>> {
        let rows = sqlx::query(
            "SELECT t.state, m.value, m.value_kind FROM trials t \
             JOIN epoch_metrics m ON m.trial_id = t.id AND m.epoch = $1 AND m.split = $2 AND m.name = $3 \
             WHERE t.sweep_id = $4 AND t.seed = $5 AND t.id <> $6 AND t.state IN ('running', 'complete', 'pruned')",
        )
        .bind(epoch)
        .bind(split)
        .bind(name)
        .bind(sweep_id)
        .bind(seed)
        .bind(trial_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading peers' values"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let state: String = r.get("state");
                let v: Option<f64> = r.get("value");
                let kind: String = r.get("value_kind");
                (state == "complete", from_value_kind(v, &kind))
            })
            .collect())
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
