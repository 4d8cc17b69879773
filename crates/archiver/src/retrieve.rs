//! Getting journeys back: search the index, read a journey straight from its objects, restore
//! it into the hot store for a while, and rebuild the index from the objects alone.

use std::collections::{BTreeMap, HashSet};

use journeyd_archive::ReadOptions;
use journeyd_objects::ObjectStore;
use journeyd_store::{ArchivePart, ArchivedJourney, DeviceId, HotStore, JourneyId, TenantId};
use journeyd_wire::Position;

use crate::{ArchiverError, tenant_of_object};

/// Archived journeys of a tenant overlapping `from_us..=to_us`, optionally of one device.
pub fn search(
    store: &HotStore,
    tenant: TenantId,
    device: Option<DeviceId>,
    from_us: Option<i64>,
    to_us: Option<i64>,
) -> Result<Vec<ArchivedJourney>, ArchiverError> {
    Ok(store
        .archived_journeys(tenant, device)?
        .into_iter()
        .filter(|e| from_us.is_none_or(|f| e.last_fix_us >= f))
        .filter(|e| to_us.is_none_or(|t| e.first_fix_us <= t))
        .collect())
}

/// A journey's positions read from its archive objects, in fix-time order. Only the row groups
/// whose statistics may hold it are read; `page_index` reads the page index as well.
pub async fn fetch_journey(
    store: &HotStore,
    objects: &ObjectStore,
    entry: &ArchivedJourney,
    page_index: bool,
) -> Result<Vec<Position>, ArchiverError> {
    let key = store.tenant_key(entry.tenant)?;
    let mut out = Vec::with_capacity(entry.positions as usize);
    for part in &entry.parts {
        let bytes = objects.get(&part.object).await?;
        let rows = journeyd_archive::read_positions_with(
            bytes,
            &ReadOptions {
                key: Some(key.clone()),
                page_index,
                only: Some((entry.device.0, entry.journey)),
            },
        )
        .map_err(|source| ArchiverError::File {
            object: part.object.clone(),
            source,
        })?;
        out.extend(rows.into_iter().map(|(_, _, p)| p));
    }
    out.sort_by_key(|p| p.fix_time_us);
    out.dedup_by_key(|p| p.fix_time_us);
    Ok(out)
}

/// Brings an archived journey back into the hot store until `until_us`. Returns its positions.
pub async fn restore(
    store: &HotStore,
    objects: &ObjectStore,
    entry: &ArchivedJourney,
    until_us: i64,
    now_us: i64,
) -> Result<usize, ArchiverError> {
    let positions = fetch_journey(store, objects, entry, true).await?;
    if positions.len() as u64 != entry.positions {
        return Err(ArchiverError::Verification {
            object: entry
                .parts
                .first()
                .map(|p| p.object.clone())
                .unwrap_or_default(),
            detail: format!(
                "{} positions read, the index says {}",
                positions.len(),
                entry.positions
            ),
        });
    }
    store.restore_into_hot(entry, &positions, until_us, now_us)?;
    tracing::info!(
        tenant = entry.tenant.0,
        device = entry.device.0,
        journey = entry.journey,
        positions = positions.len(),
        until_us,
        "archived journey restored into the hot store"
    );
    Ok(positions.len())
}

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    pub objects: u64,
    pub journeys: u64,
    pub rows: u64,
    /// Objects of uploads not committed (their journeys are still hot): left out.
    pub skipped_pending: u64,
    /// Objects no key here opens, or that do not read: left out, named in the log.
    pub unreadable: u64,
    /// Hot journeys the archive already held in full, dropped from the hot store.
    pub hot_copies_dropped: u64,
}

/// Rebuilds the archive index from the objects alone: every `tenant=…/….parquet` object is
/// read (footer and key columns) with its tenant's key. Objects of uncommitted uploads are left
/// to the compactor's next run, which settles them. Start and end marks are not in the objects,
/// so rebuilt entries carry the first and last fix only.
pub async fn rebuild_index(
    store: &HotStore,
    objects: &ObjectStore,
) -> Result<RebuildReport, ArchiverError> {
    let pending: HashSet<String> = store
        .pending_uploads()?
        .into_iter()
        .map(|p| p.object)
        .collect();
    let restored: BTreeMap<(TenantId, DeviceId, u64), i64> = store
        .tenants()?
        .into_iter()
        .map(|t| store.archived_journeys(t.id, None))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter_map(|e| Some(((e.tenant, e.device, e.journey), e.restored_until_us?)))
        .collect();
    let mut report = RebuildReport::default();
    let mut entries: BTreeMap<(TenantId, DeviceId, u64), ArchivedJourney> = BTreeMap::new();
    for listed in objects.list("tenant=").await? {
        if !listed.name.ends_with(".parquet") {
            continue;
        }
        if pending.contains(&listed.name) {
            report.skipped_pending += 1;
            continue;
        }
        let Some(tenant) = tenant_of_object(&listed.name).map(TenantId) else {
            continue;
        };
        let key = match store.tenant_key(tenant) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(object = listed.name, error = %e, "no key for this object's tenant; left out of the index");
                report.unreadable += 1;
                continue;
            }
        };
        let bytes = objects.get(&listed.name).await?;
        let summary = match journeyd_archive::summarize(
            bytes,
            &ReadOptions {
                key: Some(key),
                ..ReadOptions::default()
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(object = listed.name, error = %e, "object does not read; left out of the index");
                report.unreadable += 1;
                continue;
            }
        };
        report.objects += 1;
        report.rows += summary.rows;
        for ((device, journey), (rows, first, last)) in summary.journeys {
            let device = DeviceId(device);
            let entry = ArchivedJourney {
                tenant,
                device,
                journey,
                started_us: None,
                ended_us: None,
                first_fix_us: first,
                last_fix_us: last,
                positions: rows,
                parts: vec![ArchivePart {
                    object: listed.name.clone(),
                    rows,
                    first_fix_us: first,
                    last_fix_us: last,
                }],
                archived_us: 0,
                restored_until_us: restored.get(&(tenant, device, journey)).copied(),
            };
            entries
                .entry((tenant, device, journey))
                .and_modify(|e| e.merge(entry.clone()))
                .or_insert(entry);
        }
    }
    let kept: Vec<ArchivedJourney> = entries.into_values().collect();
    report.journeys = kept.len() as u64;
    let indexed: usize = store
        .tenants()?
        .into_iter()
        .map(|t| store.archived_journeys(t.id, None).map(|v| v.len()))
        .sum::<Result<usize, _>>()?;
    if kept.is_empty() && indexed > 0 {
        return Err(ArchiverError::Invalid(format!(
            "no archive objects found in {} but the index names {indexed} journeys: is the archive's folder or bucket right? The index is left as it is",
            objects.describe()
        )));
    }
    store.replace_archive_index(&kept)?;
    // A journey still hot whose every fix is in the archive was archived after the backup this
    // node was rebuilt from: the archive holds it, the hot copy goes.
    for e in &kept {
        if e.restored_until_us.is_some() {
            continue;
        }
        let hot = store.track(e.tenant, e.device, JourneyId(e.journey))?;
        if hot.is_empty() {
            continue;
        }
        let archived: HashSet<i64> = fetch_journey(store, objects, e, false)
            .await?
            .iter()
            .map(|p| p.fix_time_us)
            .collect();
        if hot.iter().all(|p| archived.contains(&p.fix_time_us)) {
            store.drop_hot_copy(e)?;
            report.hot_copies_dropped += 1;
        }
    }
    Ok(report)
}
