//! A job of another message version is refused by the worker, with the
//! refusal as its result on the subject the job names; nothing is evaluated.

use async_nats::jetstream;
use burn::tensor::Device;
use evocomp_engine::WorkerDevice;
use evocomp_queue::messages::{FORMAT, ResultMsg};
use evocomp_queue::testing::NatsServer;
use evocomp_queue::{WorkerOptions, serve};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
fn a_job_of_another_version_is_refused_with_a_result_saying_so() {
    let nats = NatsServer::start().expect("nats-server on PATH (scripts/setup.sh installs it)");
    let opts = WorkerOptions {
        access: evocomp_queue::Access::new(nats.url.clone()),
        allow: vec![".".into()],
        name: "w".into(),
        device: WorkerDevice::unlimited("cpu", Device::flex()),
        ack_wait: Duration::from_secs(5),
        max_deliver: 3,
        max_jobs: Some(1),
        delay: None,
        job_limit: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = std::thread::spawn(move || serve(&opts, stop));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result: ResultMsg = rt.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = jetstream::new(client);
        // The worker makes the streams; wait for them.
        let results = loop {
            if let Ok(s) = js.get_stream("EVOCOMP_RESULTS").await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let job = serde_json::json!({
            "format": FORMAT + 1,
            "evocomp": "9.9.9",
            "study": "s",
            "cid": "c0",
            "attempt": 0,
            "results": "evocomp.results.s",
            "something_new": true,
        });
        js.publish("evocomp.jobs.s", serde_json::to_vec(&job).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let consumer = results
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: "evocomp.results.s".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut m = consumer.messages().await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(30), m.next())
            .await
            .expect("a result within 30 s")
            .unwrap()
            .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    });
    worker.join().unwrap().unwrap();
    assert_eq!(result.cid, "c0");
    let why = result.result.unwrap_err();
    assert!(
        why.contains(&format!("refuses message format {}", FORMAT + 1)) && why.contains("9.9.9"),
        "{why}"
    );
}
