//! Korean and English: which language a request gets (`?lang=`, then the
//! `sugang_lang` cookie, then `Accept-Language`, then Korean) and every
//! string the pages and their scripts show.
//!
//! Owns the words only. The domain words follow Korean university
//! registration systems (수강신청, 강좌, 마이페이지, 수강취소, 정원, 대기열).
//! Must not hold logic: the scripts read the same table as JSON.

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT_LANGUAGE, COOKIE};

/// A page's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    Ko,
    En,
}

/// The cookie that keeps a language chosen on the page.
pub(crate) const LANG_COOKIE: &str = "sugang_lang";

impl Lang {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    fn parse(raw: &str) -> Option<Lang> {
        let primary = raw.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "ko" => Some(Lang::Ko),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language of a request, and whether `?lang=` chose it (then the
    /// answer sets the cookie so the choice sticks).
    pub(crate) fn of(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
        if let Some(lang) = query.and_then(Lang::parse) {
            return (lang, true);
        }
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == LANG_COOKIE)
            .and_then(|(_, value)| Lang::parse(value));
        if let Some(lang) = cookie {
            return (lang, false);
        }
        (Lang::from_accept_language(headers).unwrap_or(Lang::Ko), false)
    }

    /// The supported language the client ranks highest (RFC 9110 q-values).
    fn from_accept_language(headers: &HeaderMap) -> Option<Lang> {
        let raw = headers.get(ACCEPT_LANGUAGE)?.to_str().ok()?;
        raw.split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let lang = Lang::parse(parts.next()?)?;
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some((lang, q))
            })
            // The first of equal rank wins: max_by keeps the last, so reverse.
            .rev()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(lang, _)| lang)
    }

    /// The text of `key` in this language; the key itself if unknown (a
    /// visible slip, never a panic).
    pub(crate) fn t(self, key: &'static str) -> &'static str {
        match STRINGS.iter().find(|(k, _, _)| *k == key) {
            Some((_, ko, en)) => match self {
                Lang::Ko => ko,
                Lang::En => en,
            },
            None => key,
        }
    }

    /// Every string, as a JSON object for the scripts.
    pub(crate) fn table_json(self) -> String {
        let map: serde_json::Map<String, serde_json::Value> =
            STRINGS.iter().map(|&(key, ..)| (key.to_owned(), self.t(key).into())).collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// (key, 한국어, English).
const STRINGS: &[(&str, &str, &str)] = &[
    ("app", "수강신청 sugang", "sugang course registration"),
    ("nav.student", "수강신청", "Registration"),
    ("nav.mypage", "마이페이지", "My page"),
    ("nav.instructor", "강의 관리", "Instructor"),
    ("nav.ops", "운영 콘솔", "Operations"),
    ("nav.main", "주 메뉴", "Main menu"),
    ("skip", "본문으로 건너뛰기", "Skip to content"),
    // Who you are
    ("who.title", "사용자", "Who you are"),
    ("who.role", "역할", "Role"),
    ("who.name", "이름", "Name"),
    ("who.use", "적용", "Use"),
    ("who.token", "접근 토큰 (sugang token)", "Access token (sugang token)"),
    ("who.signin", "로그인", "Sign in"),
    ("who.signout", "로그아웃", "Sign out"),
    ("who.as", "현재 사용자", "Signed in as"),
    ("who.none", "사용자를 먼저 정하세요.", "Choose who you are first."),
    ("who.badtoken", "토큰을 읽을 수 없습니다.", "That token cannot be read."),
    ("who.open", "인증 없음 (로컬 전용): 역할과 이름을 고르세요.", "No auth (loopback only): pick a role and a name."),
    ("role.student", "학생", "Student"),
    ("role.instructor", "교수", "Instructor"),
    ("role.admin", "운영자", "Operator"),
    // Catalog
    ("catalog.title", "강좌 목록", "Course catalog"),
    ("catalog.search", "강좌명 또는 교수명 검색", "Search by course or teacher"),
    ("catalog.go", "검색", "Search"),
    ("catalog.count", "강좌 수", "Courses"),
    ("catalog.empty", "조건에 맞는 강좌가 없습니다.", "No course matches."),
    ("catalog.prev", "이전", "Previous"),
    ("catalog.next", "다음", "Next"),
    ("catalog.page", "쪽", "Page"),
    ("catalog.live", "실시간 반영 중", "Live"),
    ("catalog.offline", "실시간 연결 끊김, 다시 연결 중", "Live updates lost, reconnecting"),
    ("course.id", "번호", "No."),
    ("course.name", "강좌명", "Course"),
    ("course.teacher", "담당교수", "Teacher"),
    ("course.fee", "수강료", "Fee"),
    ("course.textBook", "교재", "Textbook"),
    ("course.seats", "신청인원/정원", "Enrolled/Capacity"),
    ("course.capacity", "정원", "Capacity"),
    ("course.minStudents", "최소 인원", "Minimum students"),
    ("course.unlimited", "제한 없음", "unlimited"),
    ("course.open", "개설 상태", "Status"),
    ("course.opened", "개설", "Open"),
    ("course.notOpened", "미개설", "Not open"),
    ("course.full", "마감", "Full"),
    ("course.action", "신청", "Action"),
    ("course.enroll", "수강신청", "Enroll"),
    ("course.join", "대기열 신청", "Join the waitlist"),
    ("course.waitlist", "대기", "waiting"),
    ("course.waitlistCapacity", "대기열 정원", "Waitlist places"),
    ("course.waitlistLength", "대기열", "Waitlist"),
    ("won", "원", " won"),
    // Enroll
    ("enroll.title", "수강신청", "Enroll"),
    ("enroll.course", "신청 강좌", "Course"),
    ("enroll.payMethod", "결제 수단", "Payment method"),
    ("enroll.card", "카드", "Card"),
    ("enroll.account", "계좌이체", "Bank transfer"),
    ("enroll.payAccount", "카드/계좌 번호", "Card or account number"),
    ("enroll.addr", "교재 배송 주소", "Textbook delivery address"),
    ("enroll.tel", "전화번호", "Telephone"),
    ("enroll.submit", "결제하고 신청", "Pay and enroll"),
    ("enroll.join", "대기열 신청 (자리가 나면 결제)", "Join the waitlist (pay when a seat frees)"),
    ("enroll.close", "닫기", "Close"),
    ("enroll.busy", "신청 처리 중…", "Enrolling…"),
    ("enroll.ok", "수강신청이 완료되었습니다.", "You are enrolled."),
    ("enroll.full", "정원이 마감되었습니다.", "The course is full."),
    ("enroll.already", "이미 신청한 강좌입니다.", "You are already enrolled in this course."),
    (
        "enroll.declined",
        "결제가 거절되었습니다. 다른 카드로 시도하세요.",
        "The payment was declined. Try another card.",
    ),
    (
        "enroll.retry",
        "지금은 결제할 수 없습니다. {s}초 후에 다시 시도하세요.",
        "Payment is unavailable right now. Try again in {s} s.",
    ),
    ("enroll.notfound", "없는 강좌입니다.", "There is no such course."),
    (
        "enroll.gate",
        "대기실이 운영 중입니다. 대기열에서 순서를 기다리세요.",
        "The waiting room is on: wait for your turn in the queue.",
    ),
    ("enroll.denied", "이 작업을 할 권한이 없습니다.", "You may not do that."),
    ("enroll.error", "신청하지 못했습니다", "Enrollment failed"),
    ("enroll.seeMypage", "마이페이지에서 확인", "See it on my page"),
    (
        "enroll.waitlisted",
        "정원이 마감되어 대기열에 등록되었습니다. 대기 순번: {n}",
        "The course is full: you are on its waitlist. Your place: {n}",
    ),
    ("enroll.waitlistFull", "정원과 대기열이 모두 마감되었습니다.", "The course and its waitlist are full."),
    (
        "enroll.waitlistEnrolled",
        "자리가 나서 대기열에서 수강신청이 완료되었습니다.",
        "A seat freed: you are enrolled from the waitlist.",
    ),
    (
        "enroll.waitlistFailed",
        "자리가 났지만 결제하지 못해 대기가 취소되었습니다.",
        "A seat freed, but the payment failed: your place is gone.",
    ),
    // My page
    ("mypage.title", "마이페이지", "My page"),
    ("mypage.enrollments", "수강신청 내역", "My enrollments"),
    ("mypage.empty", "신청 내역이 없습니다.", "No enrollments yet."),
    ("mypage.apply", "신청 상태", "Enrollment"),
    ("mypage.pay", "결제 상태", "Payment"),
    ("mypage.delivery", "교재 배송", "Textbook"),
    ("mypage.cancel", "수강취소", "Cancel"),
    ("mypage.canceled", "수강이 취소되었습니다. 환불이 진행됩니다.", "Canceled; the fee is being refunded."),
    ("mypage.confirmCancel", "수강을 취소할까요?", "Cancel this enrollment?"),
    ("mypage.notifications", "알림", "Notifications"),
    ("mypage.noNotifications", "알림이 없습니다.", "No notifications."),
    ("mypage.refresh", "새로고침", "Refresh"),
    ("status.COMPLETED", "신청 완료", "Enrolled"),
    ("status.CANCELED", "취소됨", "Canceled"),
    ("status.APPROVED", "결제 완료", "Paid"),
    ("status.CANCEL_PENDING", "환불 대기", "Refund pending"),
    ("status.STARTED", "배송 시작", "Shipping"),
    ("status.none", "-", "-"),
    // Instructor
    ("instructor.title", "강의 관리", "My courses"),
    ("instructor.courses", "담당 강좌", "Courses I teach"),
    ("instructor.empty", "담당 강좌가 없습니다.", "You teach no course yet."),
    ("instructor.new", "강좌 개설", "Register a course"),
    ("instructor.edit", "강좌 수정", "Change a course"),
    ("instructor.save", "저장", "Save"),
    ("instructor.register", "개설", "Register"),
    ("instructor.change", "수정", "Change"),
    ("instructor.delete", "삭제", "Delete"),
    ("instructor.cancelEdit", "수정 취소", "Stop editing"),
    ("instructor.roster", "수강생 명단", "Roster"),
    ("instructor.rosterOf", "수강생 명단:", "Roster of"),
    ("instructor.noStudents", "수강생이 없습니다.", "No students yet."),
    ("instructor.saved", "저장했습니다.", "Saved."),
    ("instructor.deleted", "삭제했습니다.", "Deleted."),
    ("instructor.confirmDelete", "강좌를 삭제할까요?", "Delete this course?"),
    // Operator
    ("ops.title", "운영 콘솔", "Operations console"),
    ("ops.tree", "감독 트리", "Supervision tree"),
    ("ops.node", "구성요소", "Component"),
    ("ops.alive", "상태", "State"),
    ("ops.up", "정상", "up"),
    ("ops.down", "중지", "down"),
    ("ops.live", "활성 개체", "Live"),
    ("ops.restarts", "재시작", "Restarts"),
    ("ops.heldDown", "보류 (백오프)", "Held down (backoff)"),
    ("ops.breaker", "결제 차단기", "Payment breaker"),
    ("ops.failures", "연속 실패", "Failures"),
    ("ops.transitions", "전환 횟수", "Transitions"),
    ("ops.inFlight", "진행 중 결제", "Payments in flight"),
    ("ops.retryIn", "재시도까지", "Probe in"),
    ("ops.subscribers", "구독자", "Subscribers"),
    ("ops.lag", "지연 이벤트", "Lag (events)"),
    ("ops.offset", "오프셋", "Offset"),
    ("ops.workers", "작업자", "Workers"),
    ("ops.journal", "저널", "Journal"),
    ("ops.groupSize", "평균 그룹 크기", "Mean group size"),
    ("ops.commitMs", "평균 커밋 지연 (ms)", "Mean commit latency (ms)"),
    ("ops.lastSeq", "마지막 이벤트 번호", "Last event seq"),
    ("ops.rate", "초당 수강신청 (최근 5분)", "Enrollments per second (last 5 minutes)"),
    ("ops.latencyChart", "수강신청 평균 응답 시간 (ms, 최근 5분)", "Mean enrollment latency (ms, last 5 minutes)"),
    ("ops.faults", "장애 주입", "Fault injection"),
    ("ops.gateway", "결제 게이트웨이", "Payment gateway"),
    ("ops.gatewayDown", "게이트웨이 중단", "Gateway down"),
    ("ops.gatewayUp", "게이트웨이 복구", "Gateway up"),
    ("ops.latency", "지연 (ms)", "Latency (ms)"),
    ("ops.setLatency", "지연 설정", "Set latency"),
    ("ops.coursePanic", "강좌 액터 패닉", "Course actor panic"),
    ("ops.courseId", "강좌 번호", "Course id"),
    ("ops.panic", "패닉 발생", "Panic"),
    ("ops.subDown", "중지", "Stop"),
    ("ops.subUp", "재시작", "Start"),
    ("ops.done", "적용했습니다.", "Done."),
    ("ops.needAdmin", "운영자만 볼 수 있습니다.", "Operators only."),
    ("ops.gatewayState", "게이트웨이", "Gateway"),
    ("ops.cluster", "클러스터", "Cluster"),
    ("ops.clusterHere", "이 노드", "This node"),
    ("ops.clusterPrimary", "주 노드", "Primary"),
    ("ops.clusterNoPrimary", "없음", "none"),
    ("ops.clusterLease", "임대 경과 / 유효 시간", "Lease age / TTL"),
    ("ops.clusterStream", "스트림 (복제본, 마지막 위치)", "Stream (replicas, last position)"),
    ("ops.clusterNode", "노드", "Node"),
    ("ops.clusterRole", "역할", "Role"),
    ("ops.clusterApplied", "적용 위치", "Applied position"),
    ("ops.clusterHeartbeat", "마지막 신호", "Heartbeat age"),
    ("ops.clusterUnits", "구독 단위 (지연)", "Subscriber units (lag)"),
    ("ops.rolePrimary", "주 노드", "Primary"),
    ("ops.roleReplica", "복제 노드", "Replica"),
    ("breaker.closed", "닫힘 (정상)", "closed (healthy)"),
    ("breaker.open", "열림 (차단)", "open (failing fast)"),
    ("breaker.halfOpen", "반열림 (시험 중)", "half-open (probing)"),
    // The waiting room (대기실) and its gate.
    ("gate.title", "대기실", "Waiting room"),
    (
        "gate.explain",
        "수강신청이 몰려 순서대로 입장합니다. 이 창을 닫지 마세요: 새로고침해도 순서는 유지되고, 차례가 되면 신청이 이어서 진행됩니다.",
        "Registration is busy, so students go in turn. Keep this tab open: a reload keeps your place, and your enrollment goes on when it is your turn.",
    ),
    ("gate.course", "신청할 강좌", "Course"),
    ("gate.position", "대기 순번", "Your position"),
    ("gate.eta", "예상 대기 시간", "Estimated wait"),
    ("gate.seconds", "{s}초", "{s} s"),
    ("gate.notOpen", "오픈 전 (오픈 시 순번 추첨)", "before the opening (places are drawn at the opening)"),
    ("gate.waiting", "대기 중입니다.", "Waiting."),
    ("gate.admitted", "입장했습니다. 수강신청을 진행합니다…", "Your turn: enrolling…"),
    (
        "gate.expired",
        "입장 시간이 지났습니다. 다시 신청하세요.",
        "Your admission expired. Enroll again to queue again.",
    ),
    ("gate.failed", "대기열에 들어가지 못했습니다.", "Could not join the queue."),
    ("gate.leave", "대기 취소", "Leave the queue"),
    ("gate.state", "대기실", "Waiting room"),
    ("gate.on", "운영 중", "on"),
    ("gate.off", "꺼짐", "off"),
    ("gate.waitingCount", "대기 인원", "Waiting"),
    ("gate.admittedTotal", "입장 누계", "Admitted in all"),
    ("gate.admittedPerSecond", "초당 입장 (최근)", "Admitted per second (recent)"),
    ("gate.oldestWait", "최장 대기", "Longest wait"),
    ("gate.enabled", "대기실 운영", "Waiting room on"),
    ("gate.rate", "초당 입장 인원", "Admissions per second"),
    ("gate.opensAt", "오픈 시각 (비우면 즉시)", "Opens at (empty: now)"),
    ("gate.ttl", "입장 유효 시간 (초)", "Admission valid for (s)"),
    ("gate.apply", "적용", "Apply"),
    ("error.network", "서버에 연결할 수 없습니다.", "The server cannot be reached."),
    ("error.auth", "로그인이 필요합니다.", "Sign in first."),
];

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_query_then_the_cookie_then_accept_language_then_korean() {
        let en = headers(&[("accept-language", "en-US,en;q=0.9,ko;q=0.8")]);
        assert_eq!(Lang::of(None, &en), (Lang::En, false));
        assert_eq!(Lang::of(Some("ko"), &en), (Lang::Ko, true));
        let cookie = headers(&[("accept-language", "en"), ("cookie", "a=b; sugang_lang=ko")]);
        assert_eq!(Lang::of(None, &cookie), (Lang::Ko, false));
        assert_eq!(Lang::of(None, &headers(&[("accept-language", "fr, en;q=0.5, ko;q=0.7")])), (Lang::Ko, false));
        assert_eq!(Lang::of(None, &headers(&[("accept-language", "ko;q=0, en")])), (Lang::En, false));
        assert_eq!(Lang::of(None, &HeaderMap::new()), (Lang::Ko, false));
    }

    #[test]
    fn every_key_has_both_languages() {
        for (key, ko, en) in STRINGS {
            assert!(!ko.is_empty() && !en.is_empty(), "{key}");
        }
        assert_eq!(Lang::Ko.t("nav.mypage"), "마이페이지");
        assert_eq!(Lang::En.t("nav.mypage"), "My page");
    }
}
