//! Admission of one try to its backend (`[[site]] max_requests`, `queue`,
//! `queue_timeout`): the backend chosen, or else another of its site with room, gives
//! the try a slot; when every one is full the request waits in the site's queue for a
//! slot to come free, and is refused (503 with `Retry-After`) when the queue is full
//! or it waited `queue_timeout`. A request never spills to another site for want of
//! room: the split stays what the operator set, and a retry is admitted the same way,
//! so it never lands on a full backend either.

use metrics::counter;

use crate::health::{Rejection, Slot};
use crate::routing::{Pick, Routing, SiteRoute};

/// A slot for `pick` or for another usable backend of its site not in `tried`.
pub(crate) async fn admit(routing: &Routing, pick: Pick, tried: &[Pick]) -> Result<(Pick, Slot), Rejection> {
    let site = &routing.sites[pick.site];
    let admission = site.admission;
    if let Some(slot) = routing.backend(pick).try_enter(admission.max_requests) {
        return Ok((pick, slot));
    }
    if let Some(found) = room_in(site, pick.site, tried) {
        return Ok(found);
    }
    let queue = &routing.backend(pick).queue;
    let Some(_place) = queue.join(admission.queue) else {
        return Err(refuse(site, Rejection::Full));
    };
    let deadline = tokio::time::Instant::now() + admission.queue_timeout;
    loop {
        let freed = queue.freed();
        tokio::pin!(freed);
        // Registered before looking, so a slot freed in between still wakes us.
        freed.as_mut().enable();
        if let Some(found) = room_in(site, pick.site, tried) {
            return Ok(found);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(refuse(site, Rejection::Timeout));
        }
    }
}

fn room_in(site: &SiteRoute, index: usize, tried: &[Pick]) -> Option<(Pick, Slot)> {
    let limit = site.admission.max_requests;
    site.usable_picks(index, tried)
        .find_map(|pick| site.backends[pick.backend].try_enter(limit).map(|slot| (pick, slot)))
}

fn refuse(site: &SiteRoute, why: Rejection) -> Rejection {
    if let Some(backend) = site.backends.first() {
        backend.queue.reject(why);
    }
    counter!("splitgate_queue_rejected_total", "site" => site.name.clone(), "reason" => why.as_str()).increment(1);
    why
}
