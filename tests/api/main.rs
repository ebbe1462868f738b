//! Integration tests against real PostgreSQL and Redis (and the embedded mode).
//! One binary; each test owns its database, Redis prefix or data dir.

mod addresses;
mod alipay;
mod buy;
mod catalog;
mod claims;
mod cli;
mod conformance;
mod dashboard;
mod delivery;
mod errors;
mod fulfilment;
mod fuzz;
mod gateway;
mod hardening;
mod helpers;
mod inventory;
mod live;
mod live_helpers;
mod payments;
mod rebuild;
mod security;
mod sim_alipay;
mod sim_wechatpay;
mod uploads;
mod wechatpay;
