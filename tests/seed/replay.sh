#!/usr/bin/env bash
# tests/seed/replay.sh URL: the original system's own client, replayed.
#
# The write-up of the system sugang replaces (../shared/seed, the section
# after "적용 후 REST API 의 테스트") tested it with these httpie commands. They
# run here verbatim against URL (in place of the original's load balancer),
# and each answer is checked against what that client expected. httpie's
# `key=value` sends every value as a JSON string (`fee=10000` is "10000"),
# which the contract reads as an integer.
#
# One step differs from the write-up, and says why: the write-up enrolls with
# `fee=12500` after changing the fee to 125000 (a typo in it); sugang refuses a
# stale fee with 409 and takes no id for it, so the client, told the price,
# enrolls again with the fee it was shown, and that enrollment is id 1, the id
# the write-up's `DELETE /classes/1` cancels.
#
# The original's read models followed its commands through Kafka, a moment
# later; the GETs that check a read model retry for up to 5 s, as a person
# reloading the page would. Needs httpie (`apt-get install httpie`) and python3.
set -euo pipefail
URL=${1:?usage: tests/seed/replay.sh URL}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step=0

fail() { echo "seed replay, step $step: $*" >&2; [ -f "$work/body" ] && cat "$work/body" >&2; exit 1; }

# run EXPECTED_STATUS http ARGS...: runs the command, checks the status.
run() {
    local expected=$1; shift
    step=$((step + 1))
    echo "== $*" >&2
    # --ignore-stdin: httpie reads a non-terminal stdin as the body, which a
    # script's is; the command itself is the write-up's.
    "$1" --ignore-stdin "${@:2}" --print=hb --pretty=none > "$work/answer" 2>&1 || true
    local status
    status=$(awk 'NR == 1 { print $2 }' "$work/answer")
    awk 'f; /^\r?$/ { f = 1 }' "$work/answer" > "$work/body"
    [ "$status" = "$expected" ] || fail "expected $expected, got ${status:-no answer}"
}

# check PYTHON_EXPR: the last body, as `b`, must make the expression true.
check() {
    python3 - "$work/body" "$1" <<'PY' || fail "the answer does not hold: $1"
import json, sys
text = open(sys.argv[1]).read().strip()
b = json.loads(text) if text else None
def items(name):
    return b["_embedded"][name]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

# eventually EXPECTED_STATUS PYTHON_EXPR http ARGS...: a read-model GET, retried.
eventually() {
    local expected=$1 expr=$2; shift 2
    local deadline=$((SECONDS + 5))
    while :; do
        run "$expected" "$@"
        if ( check "$expr" ) 2>/dev/null; then return 0; fi
        [ $SECONDS -lt $deadline ] || check "$expr"
        step=$((step - 1))
        sleep 0.2
    done
}

#강의 등록
run 201 http POST $URL/courses name=korean teacher=Hong-Gil-dong fee=10000 textBook=kor_book openYn=false
check 'b["id"] == 1 and b["fee"] == 10000 and b["openYn"] is False and b["_links"]["course"]["href"] == "/courses/1"'
#강의 등록 확인
run 200 http GET $URL/courses
check 'len(items("courses")) == 1 and items("courses")[0]["name"] == "korean"'
#강의 스케쥴 확인
eventually 200 'items("courseSchedules")[0]["courseId"] == 1 and items("courseSchedules")[0]["openYn"] is False' \
    http GET $URL/courseSchedules
#강의료 수정
run 200 http PATCH $URL/courses/1 fee=125000
check 'b["fee"] == 125000'
#강의료 수정 확인
run 200 http GET $URL/courses
check 'items("courses")[0]["fee"] == 125000'
#My page 확인 (교사용) 강의료 수정 확인
eventually 200 'items("mypages")[0]["fee"] == 125000' http GET $URL/mypages
#수강 신청 (the write-up's stale fee: refused, no id taken)
run 409 http POST $URL/classes courseId=1 fee=12500 student=Kim-Soon-hee textBook=kor_book
check '"fee" in b["detail"]'
#수강 신청 (again, with the fee the client was shown)
run 201 http POST $URL/classes courseId=1 fee=125000 student=Kim-Soon-hee textBook=kor_book
check 'b["id"] == 1 and b["status"] == "COMPLETED" and b["fee"] == 125000 and b["textBook"] == "kor_book"'
#수강 등록 확인
run 200 http GET $URL/classes
check 'len(items("classes")) == 1 and items("classes")[0]["id"] == 1'
#결제 확인
run 200 http GET $URL/payments
check 'items("payments")[0]["applyId"] == 1 and items("payments")[0]["payStatus"] == "APPROVED" and items("payments")[0]["amount"] == 125000'
#강의 스케줄 Open 확인 (Open여부 : true 확인)
eventually 200 'items("courseSchedules")[0]["openYn"] is True and items("courseSchedules")[0]["studentCount"] == 1' \
    http GET $URL/courseSchedules
#강의 Open 확인 (Open여부 : true 확인)
run 200 http GET $URL/courses
check 'items("courses")[0]["openYn"] is True and items("courses")[0]["studentCount"] == 1'
#배송 시작 확인
eventually 200 'items("deliveries")[0]["applyId"] == 1 and items("deliveries")[0]["deliveryStatus"] == "STARTED"' \
    http GET $URL/deliveries
#수강 취소
run 204 http DELETE $URL/classes/1
#수강 취소 확인
run 200 http GET $URL/classes
check 'items("classes")[0]["status"] == "CANCELED"'
#강의 스케줄 Close 확인 (Open여부 : false 확인)
eventually 200 'items("courseSchedules")[0]["openYn"] is False and items("courseSchedules")[0]["studentCount"] == 0' \
    http GET $URL/courseSchedules
#강의 Close 확인 (Open여부 : false 확인)
run 200 http GET $URL/courses
check 'items("courses")[0]["openYn"] is False'
#결제 취소 확인 (상태값 "CANCEL" 확인)
eventually 200 'items("payments")[0]["payStatus"] == "CANCELED"' http GET $URL/payments
#배송 취소 확인 (상태값 "DELIVERY_CANCEL" 확인)
eventually 200 'items("deliveries")[0]["deliveryStatus"] == "CANCELED"' http GET $URL/deliveries
#My page 확인 (학생용)
eventually 200 'items("inquiryMypages")[0]["applyStatus"] == "CANCELED" and items("inquiryMypages")[0]["deliveryStatus"] == "CANCELED" and items("inquiryMypages")[0]["payStatus"] == "CANCELED"' \
    http GET $URL/inquiryMypages
#My page 확인 (교사용)
eventually 200 'items("mypages")[0]["studentCount"] == 0 and items("mypages")[0]["openYn"] is False' http GET $URL/mypages

echo "seed replay: $step commands, every answer as the original's client expected" >&2
