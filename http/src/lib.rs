//! The HTTP front of sugang: the axum router that speaks the contract of
//! `shared/API.md` (HAL items and collections, problem+json errors, auth,
//! health, metrics, OpenAPI) over the actor facade of `sugang-actors`.
//!
//! # Layout
//!
//! Filled by the HTTP issue; until then this crate only fixes its place in the
//! dependency order `http` → `actors` → `storage`.
