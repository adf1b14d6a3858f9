//! The whole scenario of the service, as a client lives it: register a
//! course, change its fee, enroll and pay, see the payment, the shipment,
//! both my-pages and the notifications, cancel, and see the refund and the
//! canceled shipment.

use serde_json::json;

use crate::app::{eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_scenario_register_change_enroll_ship_cancel_refund() {
    let mut app = spawn_app().await;

    // An instructor registers a course (a legacy openYn is ignored).
    let created = app
        .post(
            "/courses",
            json!({"name": "korean", "teacher": "Hong-Gil-dong", "fee": 10000, "textBook": "kor_book",
                   "capacity": 40, "minStudents": 1, "openYn": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("location"), Some("/courses/1"));
    assert!(created.seq() >= 1);
    assert_eq!(created.body["openYn"], false);
    assert_eq!(created.body["studentCount"], 0);
    assert_eq!(created.body["_links"]["self"]["href"], "/courses/1");

    // … and changes its fee.
    let changed = app.patch("/courses/1", json!({"fee": 12000})).await;
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.body["fee"], 12000);
    assert!(changed.seq() > created.seq());

    // A client that saw the old fee is told so.
    let stale = app.post("/classes", json!({"courseId": 1, "student": "Kim-Soon-hee", "fee": 10000})).await;
    stale.assert_problem(409, None);

    // A student enrolls and pays the new fee.
    let enrolled = app
        .post(
            "/classes",
            json!({"courseId": 1, "student": "Kim-Soon-hee", "payMethod": "card", "payAccount": "4242424242424242",
                   "addr": "Seoul", "telephoneInfo": "010-1234-5678", "fee": 12000, "textBook": "ignored"}),
        )
        .await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let id = enrolled.body["id"].as_u64().unwrap();
    assert_eq!(enrolled.header("location"), Some(format!("/classes/{id}").as_str()));
    assert_eq!(enrolled.body["status"], "COMPLETED");
    assert_eq!(enrolled.body["fee"], 12000);
    assert_eq!(enrolled.body["textBook"], "kor_book");
    assert_eq!(enrolled.body["paymentId"], id);
    assert_eq!(enrolled.body["_links"]["course"]["href"], "/courses/1");
    assert!(enrolled.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let seq = enrolled.seq();

    let payments = app.get(&format!("/payments?applyId={id}")).await;
    let payment = &payments.body["_embedded"]["payments"][0];
    assert_eq!(payment["payStatus"], "APPROVED");
    assert_eq!(payment["amount"], 12000);
    assert_eq!(payment["applyId"], id);

    let deliveries = app.get(&format!("/deliveries?applyId={id}&after={seq}")).await;
    assert_eq!(deliveries.status, 200, "{deliveries:?}");
    let delivery = &deliveries.body["_embedded"]["deliveries"][0];
    assert_eq!(delivery["deliveryStatus"], "STARTED");
    assert_eq!(delivery["addr"], "Seoul");
    assert_eq!(delivery["textBook"], "kor_book");

    let course = app.get("/courses/1").await;
    assert_eq!((course.body["studentCount"].as_u64(), course.body["openYn"].as_bool()), (Some(1), Some(true)));

    let mypages = app.get(&format!("/mypages?teacher=Hong-Gil-dong&after={seq}")).await;
    let mypage = &mypages.body["_embedded"]["mypages"][0];
    assert_eq!((mypage["studentCount"].as_u64(), mypage["openYn"].as_bool()), (Some(1), Some(true)));
    assert_eq!(mypage["fee"], 12000);

    let schedules = app.get(&format!("/courseSchedules?after={seq}")).await;
    assert_eq!(schedules.body["_embedded"]["courseSchedules"][0]["studentCount"], 1);

    // The shipment's own event comes after the enrollment's: wait for it.
    eventually("the student's my-page to show the shipment", || async {
        let inquiry = app.get(&format!("/inquiryMypages?student=Kim-Soon-hee&after={seq}")).await;
        let view = &inquiry.body["_embedded"]["inquiryMypages"][0];
        view["applyStatus"] == "COMPLETED" && view["payStatus"] == "APPROVED" && view["deliveryStatus"] == "STARTED"
    })
    .await;

    let notes = app.get(&format!("/notifications?recipient=Kim-Soon-hee&after={seq}")).await;
    assert!(notes.body["page"]["totalElements"].as_u64().unwrap() >= 1, "{notes:?}");
    assert!(notes.body["_embedded"]["notifications"][0]["createdAt"].is_string());

    // The student cancels: refund, seat released, shipment canceled.
    let canceled = app.delete(&format!("/classes/{id}")).await;
    assert_eq!(canceled.status, 204, "{canceled:?}");
    let cancel_seq = canceled.seq();
    let class = app.get(&format!("/classes/{id}")).await;
    assert_eq!(class.body["status"], "CANCELED");
    eventually("the refund", || async { app.get(&format!("/payments/{id}")).await.body["payStatus"] == "CANCELED" })
        .await;
    let delivery = app.get(&format!("/deliveries/{id}?after={cancel_seq}")).await;
    assert_eq!(delivery.body["deliveryStatus"], "CANCELED", "{delivery:?}");
    let inquiry = app.get(&format!("/inquiryMypages/{id}?after={cancel_seq}")).await;
    assert_eq!(inquiry.body["applyStatus"], "CANCELED");
    assert_eq!(app.get("/courses/1").await.body["studentCount"], 0);

    // A second cancellation is 204 again and changes nothing.
    let again = app.delete(&format!("/classes/{id}")).await;
    assert_eq!(again.status, 204);
    assert_eq!(app.get(&format!("/classes/{id}")).await.body["status"], "CANCELED");
    let completed = app.get("/classes?status=COMPLETED").await;
    assert_eq!(completed.body["page"]["totalElements"], 0);

    app.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_hal_pages() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.course(&format!("course {i}"), if i % 2 == 0 { "Hong" } else { "Lee" }, 100, None).await;
    }
    let page = app.get("/courses?page=1&size=2").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["page"], json!({"size": 2, "totalElements": 5, "totalPages": 3, "number": 1}));
    let names: Vec<_> = page.body["_embedded"]["courses"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect();
    assert_eq!(names, vec![json!(3), json!(4)]);
    assert_eq!(page.body["_links"]["self"]["href"], "/courses?page=1&size=2");
    let hong = app.get("/courses?teacher=Hong").await;
    assert_eq!(hong.body["page"]["totalElements"], 3);
    let beyond = app.get("/courses?page=9").await;
    assert_eq!(beyond.body["_embedded"]["courses"], json!([]));
}
