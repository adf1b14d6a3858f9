//! Dense ids and complete read-your-writes over HTTP (issue 14): the seed's
//! own sequence (a stale-fee enrollment refused, then `DELETE /classes/1`),
//! refused enrollments taking no id, and `?after=` on `/inquiryMypages`
//! answering only once the shipment the delivery subscriber started is in
//! the student's my-page.

use serde_json::json;

use crate::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_refused_enrollment_takes_no_id() {
    let app = spawn_app().await;
    let created =
        app.post("/courses", json!({"name": "korean", "teacher": "Hong-Gil-dong", "fee": 10000, "capacity": 1})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["id"], 1);
    assert_eq!(app.patch("/courses/1", json!({"fee": 12000})).await.status, 200);

    // The seed's stale-fee request is refused …
    let stale = app.post("/classes", json!({"courseId": 1, "student": "Kim-Soon-hee", "fee": 10000})).await;
    stale.assert_problem(409, None);
    // … so the next enrollment is 1,
    let enrolled = app.post("/classes", json!({"courseId": 1, "student": "Kim-Soon-hee", "fee": 12000})).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    assert_eq!(enrolled.body["id"], 1, "{enrolled:?}");
    // … a full course refuses the next without using an id,
    app.enroll(1, "Lee").await.assert_problem(409, None);
    // … and so does a declined card.
    let math = app.course("math", "Hong-Gil-dong", 5000, None).await;
    assert_eq!(math, 2);
    let declined =
        app.post("/classes", json!({"courseId": math, "student": "Lee", "payAccount": "4000000000000002"})).await;
    declined.assert_problem(402, None);
    let second = app.enroll(math, "Lee").await;
    assert_eq!(second.body["id"], 2, "{second:?}");
    assert_eq!(second.body["paymentId"], 2);

    // The seed's cancellation of enrollment 1 finds it.
    let canceled = app.delete("/classes/1").await;
    assert_eq!(canceled.status, 204, "{canceled:?}");
    let seq = canceled.seq();
    assert_eq!(app.get("/classes/1").await.body["status"], "CANCELED");
    let payments = app.get(&format!("/payments?applyId=1&after={seq}")).await;
    let payment = &payments.body["_embedded"]["payments"][0];
    assert_eq!(payment["id"], 1, "{payments:?}");
    assert_eq!(payment["applyId"], 1);
    let deliveries = app.get(&format!("/deliveries?applyId=1&after={seq}")).await;
    assert_eq!(deliveries.body["_embedded"]["deliveries"][0]["id"], 1, "{deliveries:?}");
    assert_eq!(deliveries.body["_embedded"]["deliveries"][0]["deliveryStatus"], "CANCELED", "{deliveries:?}");
}

/// Enroll, then read my-page `?after=` the enrollment's seq at once: the
/// delivery the delivery subscriber started in reaction is always there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_on_my_page_covers_the_shipment_started_in_reaction() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong-Gil-dong", 10000, None).await;
    for i in 0..40 {
        let student = format!("student-{i}");
        let enrolled = app.enroll(course, &student).await;
        assert_eq!(enrolled.status, 201, "{enrolled:?}");
        let seq = enrolled.seq();
        let inquiry = app.get(&format!("/inquiryMypages?student={student}&after={seq}")).await;
        assert_eq!(inquiry.status, 200, "{inquiry:?}");
        let view = &inquiry.body["_embedded"]["inquiryMypages"][0];
        assert_eq!(view["deliveryStatus"], "STARTED", "enrollment {i}: my-page answered before its shipment: {view}");
    }
}
