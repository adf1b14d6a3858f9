//! End-to-end tests of the HTTP API against the real server: each test
//! starts `sugang_http::serve` on 127.0.0.1:0 over a fresh temporary data
//! directory (`spawn_app`) and talks to it with reqwest.
//!
//! # Layout
//!
//! - `app`: `spawn_app`, the running server and request helpers.
//! - `scenario`: the whole course-enrollment scenario.
//! - `statuses`: every status code of the contract.
//! - `bad_input`: each class of bad input is a 4xx that changes nothing.
//! - `auth`: the auth matrix, a person as (role, name), token lifetimes, and
//!   the loopback refusal.
//! - `edge`: what the edge does to slow, huge and mislabelled requests.
//! - `cli`: the binary refuses bad starts with a reason; `sugang token`.
//! - `shutdown`: graceful shutdown under load loses no acknowledged request;
//!   readiness 503 while starting.
//! - `rush`: `sugang rush` passes against a sound server and fails when a
//!   read model never converges.
//! - `hal`: `application/hal+json`, item links named after their resource, page links.
//! - `openapi`: the OpenAPI document lists every route.
//! - `metrics`: every `/metrics` family has HELP and TYPE; the dashboard's
//!   queries name exposed series.
//! - `queue`: the waiting room: admissions required by `POST /classes` (428),
//!   tickets, their stream, the gate, who may do what.
//! - `pages`: the web pages, the live seat stream, the catalog's speed.
//! - `demos`: every `sugang demo` scenario passes its own verdict.
//! - `store`: `sugang store verify|backup`, and a damaged store refused.
//! - `waitlists`: truthful "full" and the waitlists of registration day.
//! - `cluster`: cluster mode's HTTP side over two servers and a channel:
//!   forwarding to the primary, no second hop, `/admin/cluster`, readiness
//!   and `?after=` on a replica.
//! - `review`: registration day attacked: malformed gate settings, one
//!   person acting for another, races, the parking bound.

mod app;
mod auth;
mod bad_input;
mod cli;
mod cluster;
mod demos;
mod edge;
mod hal;
mod ids;
mod metrics;
mod openapi;
mod pages;
mod queue;
mod review;
mod rush;
mod scenario;
mod shutdown;
mod statuses;
mod store;
mod waitlists;
