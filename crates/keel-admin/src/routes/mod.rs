//! The handlers, one module per area.

pub(crate) mod cache;
pub(crate) mod events;
pub(crate) mod gateway;
pub(crate) mod health;
pub(crate) mod locks;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod queues;
pub(crate) mod ratelimit;
pub(crate) mod schedules;
pub(crate) mod stats;
pub(crate) mod system;
pub(crate) mod work;
