//! The web pages: students (`/`, `/mypage`), instructors (`/instructor`)
//! and operators (`/ops`), served by the same binary as the API, in Korean
//! and English.
//!
//! Server-rendered HTML from `maud` templates (checked at compile time), a
//! few scripts of our own and one stylesheet, embedded in the binary: no
//! Node.js to build or run. The public catalog is rendered here (anyone may
//! read it, as `GET /courses`); everything personal (my page, a roster, the
//! supervision tree) is fetched by the page's script from the JSON API with
//! the person's own token, so the API's checks decide what each person sees.
//!
//! # Layout
//!
//! - `i18n`: the language of a request and every string, in Korean and English.
//! - `assets`: the embedded stylesheet and scripts (`/assets/…`).
//! - `live`: `GET /events/courses`, Server-Sent Events of seat counts,
//!   woken by the event log.
//! - `student`: the catalog with search and the enroll form; my page.
//! - `instructor`: an instructor's courses and rosters.
//! - `ops`: the operator console.
//! - `gate`: the waiting room on the catalog and the gate's controls on `/ops`.

mod assets;
mod gate;
mod i18n;
mod instructor;
mod live;
mod ops;
mod student;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_LANGUAGE, CONTENT_SECURITY_POLICY, SET_COOKIE, VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::AppState;
use i18n::{LANG_COOKIE, Lang};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(student::catalog))
        .route("/mypage", get(student::mypage))
        .route("/instructor", get(instructor::page))
        .route("/ops", get(ops::page))
        .route("/assets/{name}", get(assets::asset))
        .route("/events/courses", get(live::course_events))
}

/// Which page group a page belongs to: its nav entry and its script.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Catalog,
    MyPage,
    Instructor,
    Ops,
}

impl Section {
    fn path(self) -> &'static str {
        match self {
            Section::Catalog => "/",
            Section::MyPage => "/mypage",
            Section::Instructor => "/instructor",
            Section::Ops => "/ops",
        }
    }

    fn nav_key(self) -> &'static str {
        match self {
            Section::Catalog => "nav.student",
            Section::MyPage => "nav.mypage",
            Section::Instructor => "nav.instructor",
            Section::Ops => "nav.ops",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Section::Catalog | Section::MyPage => "/assets/student.js",
            Section::Instructor => "/assets/instructor.js",
            Section::Ops => "/assets/ops.js",
        }
    }

    /// The role the page's identity picker proposes first.
    fn role(self) -> &'static str {
        match self {
            Section::Catalog | Section::MyPage => "student",
            Section::Instructor => "instructor",
            Section::Ops => "admin",
        }
    }
}

/// What every page needs to know about the request.
struct PageContext {
    lang: Lang,
    /// `?lang=` chose the language: remember it in a cookie.
    chosen: bool,
    /// No JWT secret: the identity picker instead of the token field.
    open: bool,
}

/// What a shell page (one its script fills from the API: my page, the
/// instructor's, the operator's) needs of its request: the page context and
/// the raw query, for the language switch. A malformed query is ignored, as
/// it is by the pages that read one.
struct Shell {
    ctx: PageContext,
    query: String,
}

impl axum::extract::FromRequestParts<AppState> for Shell {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let lang = axum::extract::Query::<student::LangQuery>::try_from_uri(&parts.uri).ok().map(|q| q.0);
        let ctx = PageContext::new(state, lang.as_ref().and_then(|q| q.lang()), &parts.headers);
        Ok(Shell { ctx, query: parts.uri.query().unwrap_or("").to_owned() })
    }
}

impl Shell {
    fn render(&self, section: Section, title: &'static str, main: Markup) -> Response {
        self.ctx.render(section, title, &self.query, main)
    }
}

impl PageContext {
    fn new(state: &AppState, lang_query: Option<&str>, headers: &HeaderMap) -> Self {
        let (lang, chosen) = Lang::of(lang_query, headers);
        PageContext { lang, chosen, open: state.auth.is_open() }
    }

    fn t(&self, key: &'static str) -> &'static str {
        self.lang.t(key)
    }

    /// A table the page's script fills: its id, and the keys of its column
    /// headings. Below 40rem each row becomes a labelled card.
    fn script_table(&self, id: &str, columns: &[&'static str]) -> Markup {
        html! {
            div.table-wrap {
                table.cards id=(id) {
                    thead { tr { @for column in columns { th scope="col" { (self.t(column)) } } } }
                    tbody {}
                }
            }
        }
    }

    /// The whole document around a page's `main`, as a response with the
    /// language headers (and the cookie when `?lang=` chose it).
    fn render(&self, section: Section, title: &'static str, query: &str, main: Markup) -> Response {
        let lang = self.lang;
        let other = match lang {
            Lang::Ko => Lang::En,
            Lang::En => Lang::Ko,
        };
        let switch_href = lang_href(section.path(), query, other);
        let strings = self.lang.table_json().replace('<', "\\u003c");
        let markup = html! {
            (DOCTYPE)
            html lang=(lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.t(title)) " · sugang" }
                    link rel="stylesheet" href="/assets/sugang.css";
                }
                body data-page=(section.path()) data-auth=(if self.open { "open" } else { "token" })
                    data-role=(section.role()) data-lang=(lang.code()) {
                    a.skip href="#main" { (self.t("skip")) }
                    header.top {
                        p.brand { a href="/" { (self.t("app")) } }
                        nav aria-label=(self.t("nav.main")) {
                            ul {
                                @for s in [Section::Catalog, Section::MyPage, Section::Instructor, Section::Ops] {
                                    li {
                                        a href=(s.path()) aria-current=[(s == section).then_some("page")] {
                                            (self.t(s.nav_key()))
                                        }
                                    }
                                }
                            }
                        }
                        p.lang {
                            a href=(switch_href) hreflang=(other.code()) lang=(other.code()) {
                                @match other { Lang::Ko => "한국어", Lang::En => "English" }
                            }
                        }
                    }
                    section #who aria-labelledby="who-title" {
                        h2 #who-title .visually-hidden { (self.t("who.title")) }
                        @if self.open {
                            form #who-pick {
                                p.hint { (self.t("who.open")) }
                                label for="who-role" { (self.t("who.role")) }
                                select #who-role name="role" {
                                    option value="student" { (self.t("role.student")) }
                                    option value="instructor" { (self.t("role.instructor")) }
                                    option value="admin" { (self.t("role.admin")) }
                                }
                                label for="who-name" { (self.t("who.name")) }
                                input #who-name name="name" type="text" autocomplete="username" maxlength="200";
                                button type="submit" { (self.t("who.use")) }
                            }
                        } @else {
                            form #who-token {
                                label for="who-token-input" { (self.t("who.token")) }
                                input #who-token-input name="token" type="password" autocomplete="off" spellcheck="false";
                                button type="submit" { (self.t("who.signin")) }
                            }
                        }
                        p #who-current role="status" aria-live="polite" {}
                        button #who-signout type="button" hidden { (self.t("who.signout")) }
                    }
                    main #main tabindex="-1" { (main) }
                    script #strings type="application/json" { (PreEscaped(strings)) }
                    script src="/assets/common.js" {}
                    script src=(section.script()) {}
                }
            }
        };
        let mut response = markup.into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_LANGUAGE, HeaderValue::from_static(lang.code()));
        headers.insert(VARY, HeaderValue::from_static("Accept-Language, Cookie"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Our own scripts, styles and API only; never framed.
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
        );
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if self.chosen {
            let cookie = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.insert(SET_COOKIE, value);
            }
        }
        response
    }
}

/// The same page in another language: its query with `lang` replaced.
fn lang_href(path: &str, query: &str, lang: Lang) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !p.starts_with("lang=")).collect();
    let lang_pair = format!("lang={}", lang.code());
    pairs.push(&lang_pair);
    format!("{path}?{}", pairs.join("&"))
}
