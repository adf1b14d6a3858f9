//! The student pages: `/`, the public catalog (rendered here, searched by
//! course or teacher, a page at a time, with live seat counts and the enroll
//! form) and `/mypage`, whose enrollments and notifications the script
//! reads from the API with the student's own token.
//!
//! Reads only what `GET /courses` shows anyone; must not render anything
//! personal on the server.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use sugang_actors::{CourseRecord, PageRequest, WaitlistSettings};

use super::{PageContext, Section, Shell};
use crate::AppState;
use crate::error::ApiError;

/// Courses on one page of the catalog.
pub(crate) const CATALOG_PAGE_SIZE: usize = 50;

/// The catalog's query: all optional, a bad `page` is the first page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CatalogQuery {
    q: Option<String>,
    page: Option<String>,
    lang: Option<String>,
}

/// `GET /`: the catalog.
pub(crate) async fn catalog(
    State(state): State<AppState>,
    query: Result<Query<CatalogQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let ctx = PageContext::new(&state, query.lang.as_deref(), &headers);
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
    let number = query.page.as_deref().and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
    // Taken before the courses are read: the live stream resumes after it,
    // so a seat taken meanwhile is sent again rather than missed.
    let seq = state.sugang.last_seq();
    let page = find_courses(&state, search.as_deref(), number)?;
    let main = catalog_main(&ctx, query.q.as_deref().unwrap_or(""), number, seq, &page);
    Ok(ctx.render(Section::Catalog, "catalog.title", raw.as_deref().unwrap_or(""), main))
}

/// One page of the catalog: every course, or those whose name or teacher
/// contains `search` (lowercase), in id order.
fn find_courses(state: &AppState, search: Option<&str>, number: usize) -> Result<CatalogPage, ApiError> {
    let page = PageRequest { number, size: CATALOG_PAGE_SIZE };
    let found = match search {
        None => state.sugang.courses(None, page).map_err(ApiError::internal)?,
        Some(search) => {
            // Substring search has no index to use: one pass over the
            // table, keeping only the requested page.
            let all = state.sugang.courses(None, PageRequest { number: 0, size: usize::MAX });
            let all = all.map_err(ApiError::internal)?;
            let mut total = 0;
            let mut items = Vec::with_capacity(CATALOG_PAGE_SIZE);
            let skip = number.saturating_mul(CATALOG_PAGE_SIZE);
            for course in all.items {
                let matches = course.details.name.as_str().to_lowercase().contains(search)
                    || course.teacher.as_str().to_lowercase().contains(search);
                if matches {
                    if total >= skip && items.len() < CATALOG_PAGE_SIZE {
                        items.push(course);
                    }
                    total += 1;
                }
            }
            sugang_actors::Paged { items, total }
        }
    };
    let courses = found
        .items
        .into_iter()
        .map(|c| Ok((state.sugang.course_waitlist(c.id).map_err(ApiError::internal)?, c)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(CatalogPage { courses, total: found.total })
}

/// The courses of one catalog page (each with its waitlist), and how many
/// matched in all.
struct CatalogPage {
    courses: Vec<(WaitlistSettings, CourseRecord)>,
    total: usize,
}

fn catalog_main(ctx: &PageContext, q: &str, number: usize, seq: u64, page: &CatalogPage) -> Markup {
    let pages = page.total.div_ceil(CATALOG_PAGE_SIZE).max(1);
    let href = |n: usize| {
        let mut href = format!("/?page={n}");
        if !q.is_empty() {
            href.push_str("&q=");
            href.push_str(&encode(q));
        }
        href
    };
    html! {
        h1 { (ctx.t("catalog.title")) }
        form.search role="search" method="get" action="/" {
            label for="q" { (ctx.t("catalog.search")) }
            input #q name="q" type="search" value=(q);
            button type="submit" { (ctx.t("catalog.go")) }
        }
        p #catalog-summary {
            (ctx.t("catalog.count")) ": " (page.total) " · " (ctx.t("catalog.page")) " " (number + 1) "/" (pages)
            " · " span #live-status role="status" data-live="connecting" {}
        }
        @if page.courses.is_empty() {
            p { (ctx.t("catalog.empty")) }
        } @else {
            div.table-wrap {
                table #catalog.cards data-seq=(seq) {
                    caption.visually-hidden { (ctx.t("catalog.title")) }
                    thead {
                        tr {
                            th scope="col" { (ctx.t("course.id")) }
                            th scope="col" { (ctx.t("course.name")) }
                            th scope="col" { (ctx.t("course.teacher")) }
                            th scope="col" { (ctx.t("course.fee")) }
                            th scope="col" { (ctx.t("course.textBook")) }
                            th scope="col" { (ctx.t("course.seats")) }
                            th scope="col" { (ctx.t("course.open")) }
                            th scope="col" { (ctx.t("course.action")) }
                        }
                    }
                    tbody {
                        @for (waitlist, course) in &page.courses { (course_row(ctx, course, *waitlist)) }
                    }
                }
            }
        }
        nav.pager aria-label=(ctx.t("catalog.page")) {
            @if number > 0 { a href=(href(number - 1)) rel="prev" { (ctx.t("catalog.prev")) } }
            @if number + 1 < pages { a href=(href(number + 1)) rel="next" { (ctx.t("catalog.next")) } }
        }
        section #enroll aria-labelledby="enroll-title" hidden {
            h2 #enroll-title { (ctx.t("enroll.title")) }
            form #enroll-form {
                p { (ctx.t("enroll.course")) ": " strong #enroll-course {} }
                input type="hidden" name="courseId" #enroll-course-id;
                input type="hidden" name="waitlist" #enroll-waitlist value="";
                label for="pay-method" { (ctx.t("enroll.payMethod")) }
                select #pay-method name="payMethod" {
                    option value="card" { (ctx.t("enroll.card")) }
                    option value="account" { (ctx.t("enroll.account")) }
                }
                label for="pay-account" { (ctx.t("enroll.payAccount")) }
                input #pay-account name="payAccount" type="text" inputmode="numeric" autocomplete="cc-number"
                    value="4242424242424242";
                label for="addr" { (ctx.t("enroll.addr")) }
                input #addr name="addr" type="text" autocomplete="street-address";
                label for="tel" { (ctx.t("enroll.tel")) }
                input #tel name="telephoneInfo" type="tel" autocomplete="tel";
                div.actions {
                    button type="submit" #enroll-submit { (ctx.t("enroll.submit")) }
                    button type="button" #enroll-close { (ctx.t("enroll.close")) }
                }
            }
            p #enroll-result role="status" aria-live="polite" {}
            p #waitlist-place role="status" aria-live="polite" hidden {}
        }
        (super::gate::waiting_room(ctx))
    }
}

fn course_row(ctx: &PageContext, c: &CourseRecord, waitlist: WaitlistSettings) -> Markup {
    let id = c.id.get();
    let capacity = c.details.capacity.map(|c| c.get());
    let open = c.student_count >= c.details.min_students.get();
    let full = capacity.is_some_and(|cap| c.student_count >= cap);
    // A full course with room on its waitlist offers it instead.
    let join = full && waitlist.length < waitlist.capacity;
    html! {
        tr data-course-id=(id) data-capacity=[capacity] data-min=(c.details.min_students.get())
            data-waitlist-capacity=(waitlist.capacity) {
            td { (id) }
            td.name { (c.details.name.as_str()) }
            td { (c.teacher.as_str()) }
            td.num { (group_digits(c.details.fee.won())) (ctx.t("won")) }
            td { (c.details.text_book.as_ref().map_or("-", |t| t.as_str())) }
            td.num.seats {
                // One flex item in the phone's card layout.
                span {
                    span.count { (c.student_count) } " / "
                    @match capacity { Some(cap) => (cap), None => (ctx.t("course.unlimited")) }
                }
                span.waitlist hidden[waitlist.capacity == 0] {
                    " · " (ctx.t("course.waitlist")) " " span.waiting { (waitlist.length) } "/" (waitlist.capacity)
                }
            }
            td.open { (if full { ctx.t("course.full") } else if open { ctx.t("course.opened") } else { ctx.t("course.notOpened") }) }
            td {
                button type="button" .enroll data-course-id=(id) data-course-name=(c.details.name.as_str())
                    data-join=(if join { "1" } else { "" }) disabled[full && !join] {
                    (if join { ctx.t("course.join") } else { ctx.t("course.enroll") })
                }
            }
        }
    }
}

/// `10000` → `10,000`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Percent-encodes a query value.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The my-page query: only the language.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LangQuery {
    lang: Option<String>,
}

impl LangQuery {
    pub(crate) fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }
}

/// `GET /mypage`: the shell; the script fills it from `/inquiryMypages`
/// and `/notifications` as the signed-in student.
pub(crate) async fn mypage(shell: Shell) -> Response {
    let ctx = &shell.ctx;
    let main = html! {
        h1 { (ctx.t("mypage.title")) }
        p #need-who.hint role="status" {}
        section aria-labelledby="enrollments-title" {
            h2 #enrollments-title { (ctx.t("mypage.enrollments")) }
            button type="button" #mypage-refresh { (ctx.t("mypage.refresh")) }
            (ctx.script_table("enrollments", &["course.id", "course.name", "mypage.apply", "mypage.pay", "mypage.delivery", "mypage.cancel"]))
            p #mypage-result role="status" aria-live="polite" {}
        }
        section aria-labelledby="notifications-title" {
            h2 #notifications-title { (ctx.t("mypage.notifications")) }
            ul #notifications {}
        }
    };
    shell.render(Section::MyPage, "mypage.title", main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_grouped_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(10000), "10,000");
        assert_eq!(group_digits(1234567), "1,234,567");
    }

    #[test]
    fn search_terms_are_percent_encoded() {
        assert_eq!(encode("한 a&b"), "%ED%95%9C%20a%26b");
    }
}
