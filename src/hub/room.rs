//! Rooms: one per sale with viewers on this node. Every event is serialized
//! once here and shared as bytes by all local sockets of the sale.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::chat::ChatStore;
use super::presence::Presence;
use super::{EventBus, SaleEvent};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::inventory::StockLevel;
use crate::ws::protocol::Frame;

/// Room frames a socket may fall behind by, once its TCP buffers are full,
/// before it loses chat (and is told): a frame per `FANOUT_WINDOW` at most,
/// so 32 are about 3 s of a busy room.
pub const ROOM_QUEUE: usize = 32;
/// Personal frames (order events, closes) waiting for one socket.
const PERSONAL_QUEUE: usize = 256;
/// The room's housekeeping tick (presence, closing when empty).
const TICK: Duration = Duration::from_millis(100);
/// Viewer counts are reported and sent at most this often (in ticks).
const PRESENCE_EVERY: u32 = 10;

/// Room events arriving within this of the room's last publication go out
/// together as one `batch` frame, built once for every socket: at 100 chat
/// messages a second a socket gets 10 frames instead of 100, and nobody
/// watching a video stream notices 100 ms. The first event after a quiet
/// spell goes out at once. Stock is coalesced per SKU into the same
/// publications: at most 10 frames a second per SKU, the latest value at
/// most one window (plus the publisher's 50 ms) late.
pub const FANOUT_WINDOW: Duration = Duration::from_millis(100);

/// What only one socket gets.
#[derive(Debug, Clone)]
pub enum Personal {
    Frame(Frame),
    /// Close with this code and reason (a ban: 4003).
    Close(u16, &'static str),
}

struct Member {
    user_id: String,
    personal: mpsc::Sender<Personal>,
    /// Cancelled when the socket cannot keep up with its personal frames.
    stuck: CancellationToken,
}

#[derive(Default)]
struct Stock {
    levels: BTreeMap<String, StockLevel>,
    dirty: Vec<String>,
}

pub struct Room {
    pub sale_id: Uuid,
    tx: broadcast::Sender<Frame>,
    /// Events waiting for the next publication, and its wake-up.
    pending: Mutex<Vec<Frame>>,
    /// Events published so far (only the fan-out task publishes).
    published: AtomicU64,
    wake: Notify,
    /// Cancelled when the room closes: its fan-out task ends.
    closed: CancellationToken,
    members: Mutex<HashMap<u64, Member>>,
    stock: Mutex<Stock>,
    viewers: AtomicU64,
    next_id: AtomicU64,
    /// The highest chat seq this room received: after a gap, history is
    /// read from here on.
    last_chat: AtomicU64,
}

/// A socket's place in a room; leaving is dropping it.
pub struct Membership {
    pub room: Arc<Room>,
    pub id: u64,
    pub frames: broadcast::Receiver<Frame>,
    pub personal: mpsc::Receiver<Personal>,
    /// A sender to this socket's own queue (for answers to its own requests).
    pub me: mpsc::Sender<Personal>,
    pub stuck: CancellationToken,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.room.lock_members().remove(&self.id);
    }
}

impl Room {
    fn new(sale_id: Uuid, queue: usize) -> Self {
        Room {
            sale_id,
            tx: broadcast::channel(queue.max(1)).0,
            pending: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            wake: Notify::new(),
            closed: CancellationToken::new(),
            members: Mutex::new(HashMap::new()),
            stock: Mutex::new(Stock::default()),
            viewers: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            last_chat: AtomicU64::new(0),
        }
    }

    /// Short sections, no await: std mutex.
    fn lock_members(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stock(&self) -> std::sync::MutexGuard<'_, Stock> {
        self.stock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn local_count(&self) -> u64 {
        self.lock_members().len() as u64
    }

    /// Viewers on every node, as last reported.
    pub fn viewers(&self) -> u64 {
        self.viewers.load(Ordering::Relaxed)
    }

    fn enter(self: &Arc<Self>, user_id: &str) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (me, personal) = mpsc::channel(PERSONAL_QUEUE);
        let stuck = CancellationToken::new();
        // Subscribed before the member is visible: nothing sent after the
        // welcome's snapshot is missed.
        let frames = self.tx.subscribe();
        self.lock_members().insert(
            id,
            Member {
                user_id: user_id.to_owned(),
                personal: me.clone(),
                stuck: stuck.clone(),
            },
        );
        Membership {
            room: self.clone(),
            id,
            frames,
            personal,
            me,
            stuck,
        }
    }

    /// Queues a frame for every socket of the room (see `FANOUT_WINDOW`).
    pub fn broadcast(&self, frame: Frame) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(frame);
        self.wake.notify_one();
    }

    /// Sends what is pending as one frame; `false` if there was nothing.
    fn publish(&self) -> bool {
        let mut frames =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        frames.extend(self.dirty_stock());
        let Some(mut f) = Frame::batch(frames) else {
            return false;
        };
        f.at = self.published.fetch_add(f.events(), Ordering::Relaxed);
        // No receivers: nobody left to tell.
        let _ = self.tx.send(f);
        true
    }

    /// Publishes what is pending, at most once per `FANOUT_WINDOW`.
    async fn fan_out(self: Arc<Self>, shutdown: CancellationToken) {
        let now = tokio::time::Instant::now();
        let mut last = now.checked_sub(FANOUT_WINDOW).unwrap_or(now);
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.closed.cancelled() => return,
                _ = shutdown.cancelled() => return,
            }
            // Whatever arrives while this window is open joins the batch.
            tokio::time::sleep_until(last + FANOUT_WINDOW).await;
            if self.publish() {
                last = tokio::time::Instant::now();
            }
        }
    }

    fn to_user(&self, user_id: &str, msg: Personal) {
        for m in self.lock_members().values() {
            if m.user_id == user_id && m.personal.try_send(msg.clone()).is_err() {
                m.stuck.cancel();
            }
        }
    }

    fn stock_changed(&self, level: StockLevel) {
        self.stock_level(level, false);
    }

    /// Takes a newer level; `resend` queues it even when it is not newer, so
    /// after a gap every socket gets a fresh snapshot.
    fn stock_level(&self, level: StockLevel, resend: bool) {
        let mut stock = self.lock_stock();
        let newer = stock
            .levels
            .get(&level.sku)
            .is_none_or(|old| old.ver < level.ver || (resend && old.ver == level.ver));
        if newer {
            if !stock.dirty.contains(&level.sku) {
                stock.dirty.push(level.sku.clone());
            }
            stock.levels.insert(level.sku.clone(), level);
            drop(stock);
            self.wake.notify_one();
        }
    }

    /// Stock frames for every product: what a lagged socket gets again.
    pub fn stock_snapshot(&self) -> Vec<Frame> {
        let stock = self.lock_stock();
        stock
            .levels
            .values()
            .filter_map(|l| Frame::event(&SaleEvent::Stock(l.clone())))
            .collect()
    }

    /// The latest level of each SKU changed since the last publication.
    fn dirty_stock(&self) -> Vec<Frame> {
        let mut stock = self.lock_stock();
        let dirty = std::mem::take(&mut stock.dirty);
        dirty
            .iter()
            .filter_map(|sku| stock.levels.get(sku))
            .filter_map(|l| Frame::event(&SaleEvent::Stock(l.clone())))
            .collect()
    }

    fn chat(&self, event: &SaleEvent, seq: u64) {
        // A message replayed from history after a gap may also arrive live:
        // each seq goes out once (sockets drop what their welcome held).
        if self.last_chat.fetch_max(seq, Ordering::Relaxed) >= seq {
            return;
        }
        if let Some(f) = Frame::event(event) {
            self.broadcast(f);
        }
    }

    fn on_event(&self, event: &SaleEvent) {
        match event {
            SaleEvent::Stock(level) => self.stock_changed(level.clone()),
            SaleEvent::Order { order } => {
                if let Some(f) = Frame::event(event) {
                    self.to_user(&order.user_id, Personal::Frame(f));
                }
            }
            SaleEvent::Kick { user_id } => {
                self.to_user(user_id, Personal::Close(4003, "banned from this sale"));
            }
            SaleEvent::Chat(m) => self.chat(event, m.seq),
            SaleEvent::Product { .. }
            | SaleEvent::Sale { .. }
            | SaleEvent::Pinned { .. }
            | SaleEvent::ChatDeleted { .. }
            | SaleEvent::Announcement { .. }
            | SaleEvent::SlowMode { .. } => {
                if let Some(f) = Frame::event(event) {
                    self.broadcast(f);
                }
            }
        }
    }
}

/// This node's rooms, fed from the bus.
pub struct Hub {
    bus: Arc<dyn EventBus>,
    presence: Arc<dyn Presence>,
    /// Chat history, to replay what a gap in the bus lost.
    chat: Arc<dyn ChatStore>,
    catalog: Arc<Catalog>,
    clock: Arc<Clock>,
    rooms: tokio::sync::Mutex<HashMap<Uuid, Arc<Room>>>,
    /// A copy of the map for the dispatcher, which must not wait on joins.
    index: Mutex<HashMap<Uuid, Arc<Room>>>,
    /// Each room's queue, in frames (`ROOM_QUEUE` unless a test shrinks it).
    room_queue: usize,
    shutdown: CancellationToken,
}

impl Hub {
    pub fn new(
        bus: Arc<dyn EventBus>,
        presence: Arc<dyn Presence>,
        chat: Arc<dyn ChatStore>,
        catalog: Arc<Catalog>,
        clock: Arc<Clock>,
        room_queue: usize,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Hub {
            bus,
            presence,
            chat,
            catalog,
            clock,
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            index: Mutex::new(HashMap::new()),
            room_queue,
            shutdown,
        })
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Room>>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn room(&self, sale_id: Uuid) -> Option<Arc<Room>> {
        self.lock_index().get(&sale_id).cloned()
    }

    /// Enters the sale's room on this node, opening it (and subscribing to the
    /// sale's events) if it is the first socket.
    pub async fn join(
        self: &Arc<Self>,
        sale_id: Uuid,
        user_id: &str,
    ) -> Result<Membership, super::bus::BusError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(room) = rooms.get(&sale_id) {
            return Ok(room.enter(user_id));
        }
        let room = Arc::new(Room::new(sale_id, self.room_queue));
        // Listed before subscribing: no event of the sale falls in between.
        self.lock_index().insert(sale_id, room.clone());
        if let Err(e) = self.bus.watch(sale_id).await {
            self.lock_index().remove(&sale_id);
            return Err(e);
        }
        if let Ok(sale) = self.catalog.sale(sale_id).await {
            for p in sale.products {
                room.stock_changed(StockLevel {
                    sku: p.sku,
                    stock: p.stock,
                    remaining: p.remaining,
                    reserved: p.reserved,
                    sold: p.sold,
                    status: p.status,
                    ver: 0,
                });
            }
            room.lock_stock().dirty.clear();
        }
        rooms.insert(sale_id, room.clone());
        let membership = room.enter(user_id);
        tokio::spawn(room.clone().fan_out(self.shutdown.clone()));
        tokio::spawn(self.clone().tick(room));
        Ok(membership)
    }

    /// Presence, and closing the room when it empties.
    async fn tick(self: Arc<Self>, room: Arc<Room>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        let mut empty_ticks = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            n = n.wrapping_add(1);
            if !n.is_multiple_of(PRESENCE_EVERY) {
                continue;
            }
            let local = room.local_count();
            match self
                .presence
                .report(room.sale_id, local, self.clock.now_ms())
                .await
            {
                Ok(total) if total != room.viewers() => {
                    room.viewers.store(total, Ordering::Relaxed);
                    room.broadcast(Frame::viewers(total));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "presence report failed"),
            }
            empty_ticks = if local == 0 { empty_ticks + 1 } else { 0 };
            if empty_ticks >= 2 && self.close_if_empty(&room).await {
                room.closed.cancel();
                return;
            }
        }
    }

    async fn close_if_empty(&self, room: &Arc<Room>) -> bool {
        let mut rooms = self.rooms.lock().await;
        if room.local_count() > 0 {
            return false;
        }
        rooms.remove(&room.sale_id);
        self.lock_index().remove(&room.sale_id);
        if let Err(e) = self.bus.unwatch(room.sale_id).await {
            tracing::warn!(error = %e, "unsubscribing a sale failed");
        }
        true
    }

    /// Feeds the rooms from the bus, until shutdown. When events were lost on
    /// the way (this node fell behind the bus, or the bus lost its
    /// subscription), every room catches up from the stores instead: a fresh
    /// stock snapshot, and the chat after the last seq it saw.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.bus.subscribe();
        let mut gaps = self.bus.gaps();
        loop {
            let env = tokio::select! {
                env = rx.recv() => env,
                changed = gaps.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.catch_up().await;
                    continue;
                }
                _ = self.shutdown.cancelled() => return,
            };
            match env {
                Ok(env) => {
                    if let Some(room) = self.room(env.sale_id) {
                        room.on_event(&env.event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "hub fell behind the bus; catching up");
                    self.catch_up().await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn catch_up(&self) {
        metrics::counter!("lychee_room_catch_ups_total").increment(1);
        let rooms: Vec<Arc<Room>> = self.lock_index().values().cloned().collect();
        for room in rooms {
            match self.catalog.live_levels(room.sale_id).await {
                Ok(levels) => {
                    for level in levels {
                        room.stock_level(level, true);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, sale_id = %room.sale_id, "stock snapshot after a gap failed")
                }
            }
            let since = room.last_chat.load(Ordering::Relaxed);
            match self.chat.history(room.sale_id, Some(since), 0).await {
                Ok(missed) => {
                    for m in missed {
                        let seq = m.seq;
                        room.chat(&SaleEvent::Chat(m), seq);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, sale_id = %room.sale_id, "chat history after a gap failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(seq: u64) -> Frame {
        Frame::event(&SaleEvent::Chat(super::super::chat::ChatMessage {
            seq,
            user_id: "mei".into(),
            name: "Mei".into(),
            text: "hi".into(),
            ts: 1,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn events_within_a_window_are_published_together() {
        let room = Arc::new(Room::new(Uuid::new_v4(), 16));
        let mut rx = room.tx.subscribe();
        let shutdown = CancellationToken::new();
        tokio::spawn(room.clone().fan_out(shutdown.clone()));
        // After a quiet spell the first event goes at once...
        room.broadcast(chat(1));
        let first = rx.recv().await.unwrap();
        assert_eq!((first.seqs, first.at), (Some((1, 1)), 0));
        // ...and what follows within the window goes together.
        room.broadcast(chat(2));
        room.broadcast(chat(3));
        let next = rx.recv().await.unwrap();
        assert_eq!((next.seqs, next.at, next.events()), (Some((2, 3)), 1, 2));
        shutdown.cancel();
    }
}
