//! The response cache against a real upstream, on a mock clock: what is stored and what not,
//! Vary, revalidation, stale-while-revalidate, stale-if-error, coalescing, purging and warming.

mod support;

use std::sync::Arc;
use std::time::Duration;

use keel_core::HumanDuration;
use keel_gateway::{CachePolicy, GatewayConfig, Purge, RoutePolicy, RouteRule};
use reqwest::StatusCode;
use support::{App, Running, client, gateway_on_mock_clock};

fn x_cache(response: &reqwest::Response) -> String {
    response.headers()["x-cache"].to_str().unwrap().to_owned()
}

async fn get(gw: &Running, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

/// A route `/r/` caching with `policy`.
fn caching(policy: CachePolicy) -> impl FnOnce(&mut GatewayConfig) {
    move |c| {
        c.routes = vec![RouteRule {
            prefix: Some("/r/".into()),
            policy: RoutePolicy {
                cache: Some(policy),
                ..RoutePolicy::default()
            },
            ..RouteRule::default()
        }]
    }
}

/// One row of the table: the upstream's headers, the gateway's policy, a request header, and
/// whether the second identical request is a HIT.
struct Case {
    name: &'static str,
    response: &'static [(&'static str, &'static str)],
    policy: CachePolicy,
    request: &'static [(&'static str, &'static str)],
    second: &'static str,
}

#[tokio::test]
async fn what_a_shared_cache_stores_and_what_it_does_not() {
    let ttl = |p: &mut CachePolicy| p.ttl = Some(HumanDuration::from_secs(30));
    let with = |f: &dyn Fn(&mut CachePolicy)| {
        let mut p = CachePolicy::default();
        f(&mut p);
        p
    };
    let cases = [
        Case {
            name: "max-age",
            response: &[("cache-control", "max-age=60")],
            policy: CachePolicy::default(),
            request: &[],
            second: "HIT",
        },
        Case {
            name: "s-maxage beats max-age=0",
            response: &[("cache-control", "max-age=0, s-maxage=60")],
            policy: CachePolicy::default(),
            request: &[],
            second: "HIT",
        },
        Case {
            name: "Expires in the future",
            response: &[
                ("date", "Sun, 22 Nov 2026 10:00:00 GMT"),
                ("expires", "Sun, 22 Nov 2026 11:00:00 GMT"),
            ],
            policy: CachePolicy::default(),
            request: &[],
            second: "HIT",
        },
        Case {
            name: "no-store",
            response: &[("cache-control", "no-store, max-age=60")],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "private",
            response: &[("cache-control", "private, max-age=60")],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "max-age=0 without validators",
            response: &[("cache-control", "max-age=0")],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "no freshness, no ttl",
            response: &[],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "no freshness, route ttl",
            response: &[],
            policy: with(&ttl),
            request: &[],
            second: "HIT",
        },
        Case {
            name: "upstream max-age beats route ttl",
            response: &[("cache-control", "max-age=0")],
            policy: with(&ttl),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "override stores no-store",
            response: &[("cache-control", "no-store")],
            policy: with(&|p| {
                ttl(p);
                p.override_upstream = true;
            }),
            request: &[],
            second: "HIT",
        },
        Case {
            name: "Set-Cookie is never stored",
            response: &[("cache-control", "max-age=60"), ("set-cookie", "sid=1")],
            policy: with(&|p| {
                ttl(p);
                p.override_upstream = true;
            }),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "Authorization bypasses",
            response: &[("cache-control", "public, max-age=60")],
            policy: CachePolicy::default(),
            request: &[("authorization", "Bearer alice")],
            second: "BYPASS",
        },
        Case {
            name: "Authorization with a per-user key",
            response: &[("cache-control", "max-age=60")],
            policy: with(&|p| p.key_user = true),
            request: &[("authorization", "Bearer alice")],
            second: "HIT",
        },
        Case {
            name: "Vary: *",
            response: &[("cache-control", "max-age=60"), ("vary", "*")],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
        Case {
            name: "500 is not stored",
            response: &[("cache-control", "max-age=60"), ("x-status", "500")],
            policy: CachePolicy::default(),
            request: &[],
            second: "MISS",
        },
    ];
    for case in cases {
        let app = App::start().await;
        let status = case
            .response
            .iter()
            .find(|(k, _)| *k == "x-status")
            .map_or(200, |(_, v)| v.parse().unwrap());
        app.script(|s| {
            s.status = status;
            s.body = format!("body of {}", case.name);
            s.headers = case
                .response
                .iter()
                .filter(|(k, _)| *k != "x-status")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        });
        let gw = gateway_on_mock_clock(&app.url(), caching(case.policy)).await;
        let send = || {
            let mut request = client().get(gw.url("/r/thing"));
            for (k, v) in case.request {
                request = request.header(*k, *v);
            }
            request.send()
        };
        let first = send().await.unwrap();
        assert_eq!(first.status().as_u16(), status, "{}", case.name);
        let first_cache = x_cache(&first);
        let second = send().await.unwrap();
        assert_eq!(
            x_cache(&second),
            case.second,
            "{} (first: {first_cache})",
            case.name
        );
        let expected_hits = if case.second == "HIT" { 1 } else { 2 };
        assert_eq!(app.hits(), expected_hits, "{}", case.name);
        assert_eq!(
            second.text().await.unwrap(),
            format!("body of {}", case.name),
            "{}",
            case.name
        );
    }
}

#[tokio::test]
async fn hits_carry_age_and_expire_on_the_clock() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "v1".into();
        s.headers = vec![
            ("cache-control".into(), "max-age=60".into()),
            ("age".into(), "5".into()),
        ];
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    assert_eq!(x_cache(&get(&gw, "/r/a").await), "MISS");
    gw.clock.advance(Duration::from_secs(20));
    let hit = get(&gw, "/r/a").await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(hit.headers()["age"], "25", "20 s here + 5 s upstream");
    // Fresh for 60 s minus the 5 s it was already old.
    gw.clock.advance(Duration::from_secs(35));
    app.script(|s| s.body = "v2".into());
    let expired = get(&gw, "/r/a").await;
    assert_eq!(x_cache(&expired), "MISS");
    assert_eq!(expired.text().await.unwrap(), "v2");
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn the_query_is_part_of_the_key_in_any_order() {
    let app = App::start().await;
    app.script(|s| s.headers = vec![("cache-control".into(), "max-age=60".into())]);
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    assert_eq!(x_cache(&get(&gw, "/r/list?a=1&b=2").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/r/list?b=2&a=1").await), "HIT");
    assert_eq!(x_cache(&get(&gw, "/r/list?a=2").await), "MISS");
}

#[tokio::test]
async fn vary_keeps_one_variant_per_header_value() {
    let app = App::start().await;
    app.script(|s| {
        s.headers = vec![
            ("cache-control".into(), "max-age=60".into()),
            ("vary".into(), "Accept-Language, Accept-Encoding".into()),
        ]
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let lang = |l: &'static str| {
        client()
            .get(gw.url("/r/page"))
            .header("accept-language", l)
            .send()
    };
    assert_eq!(x_cache(&lang("en").await.unwrap()), "MISS");
    assert_eq!(x_cache(&lang("de").await.unwrap()), "MISS");
    assert_eq!(x_cache(&lang("en").await.unwrap()), "HIT");
    assert_eq!(x_cache(&lang("de").await.unwrap()), "HIT");
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn stale_entries_are_revalidated_with_their_etag() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "same".into();
        s.etag = Some("\"v1\"".into());
        s.headers = vec![("cache-control".into(), "max-age=10".into())];
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    assert_eq!(x_cache(&get(&gw, "/r/doc").await), "MISS");
    gw.clock.advance(Duration::from_secs(11));
    let revalidated = get(&gw, "/r/doc").await;
    assert_eq!(x_cache(&revalidated), "REVALIDATED");
    assert_eq!(revalidated.status(), StatusCode::OK);
    assert_eq!(revalidated.text().await.unwrap(), "same");
    let conditional = app.script.lock().unwrap().last_request.clone();
    assert!(
        conditional.contains(&("if-none-match".into(), "\"v1\"".into())),
        "{conditional:?}"
    );
    // Fresh again for another 10 s.
    assert_eq!(x_cache(&get(&gw, "/r/doc").await), "HIT");
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn clients_with_a_current_copy_get_304_from_the_cache() {
    let app = App::start().await;
    app.script(|s| {
        s.etag = Some("\"abc\"".into());
        s.headers = vec![
            ("cache-control".into(), "max-age=60".into()),
            (
                "last-modified".into(),
                "Sun, 22 Nov 2026 08:00:00 GMT".into(),
            ),
        ];
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    // A conditional first request still fills the cache with the whole response.
    let first = client()
        .get(gw.url("/r/x"))
        .header("if-none-match", "\"abc\"")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::NOT_MODIFIED);
    let full = get(&gw, "/r/x").await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(x_cache(&full), "HIT");
    let weak = client()
        .get(gw.url("/r/x"))
        .header("if-none-match", "W/\"abc\", \"zzz\"")
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(weak.headers()["etag"], "\"abc\"");
    let since = client()
        .get(gw.url("/r/x"))
        .header("if-modified-since", "Sun, 22 Nov 2026 09:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), StatusCode::NOT_MODIFIED);
    let older = client()
        .get(gw.url("/r/x"))
        .header("if-modified-since", "Sun, 22 Nov 2026 07:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(older.status(), StatusCode::OK);
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn head_is_answered_from_the_cached_get() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "twelve bytes".into();
        s.headers = vec![("cache-control".into(), "max-age=60".into())];
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let head = client().head(gw.url("/r/h")).send().await.unwrap();
    assert_eq!(x_cache(&head), "MISS");
    assert_eq!(head.headers()["content-length"], "12");
    let get = get(&gw, "/r/h").await;
    assert_eq!(x_cache(&get), "HIT");
    assert_eq!(get.text().await.unwrap(), "twelve bytes");
    let head = client().head(gw.url("/r/h")).send().await.unwrap();
    assert_eq!(x_cache(&head), "HIT");
    assert_eq!(head.headers()["content-length"], "12");
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "old".into();
        s.headers = vec![("cache-control".into(), "max-age=10".into())];
    });
    let gw = gateway_on_mock_clock(
        &app.url(),
        caching(CachePolicy {
            stale_while_revalidate: HumanDuration::from_secs(60),
            ..CachePolicy::default()
        }),
    )
    .await;
    assert_eq!(x_cache(&get(&gw, "/r/s").await), "MISS");
    gw.clock.advance(Duration::from_secs(30));
    // The upstream holds the refresh until the test has seen the stale answers.
    let hold = Arc::new(tokio::sync::Notify::new());
    app.script(|s| {
        s.body = "new".into();
        s.hold = Some(hold.clone());
    });
    for _ in 0..5 {
        let stale = get(&gw, "/r/s").await;
        assert_eq!(x_cache(&stale), "STALE");
        assert_eq!(stale.text().await.unwrap(), "old");
    }
    app.script(|s| s.hold = None);
    hold.notify_one();
    // The refresh lands in the background; then the new body is a HIT.
    let refreshed = async {
        loop {
            let r = get(&gw, "/r/s").await;
            if x_cache(&r) == "HIT" {
                return r.text().await.unwrap();
            }
            tokio::task::yield_now().await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(10), refreshed)
        .await
        .unwrap();
    assert_eq!(body, "new");
    assert_eq!(
        app.hits(),
        2,
        "one background refresh for all the stale answers"
    );
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_upstream_fails_or_is_gone() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "good".into();
        s.headers = vec![("cache-control".into(), "max-age=10".into())];
    });
    let gw = gateway_on_mock_clock(
        &app.url(),
        caching(CachePolicy {
            stale_if_error: HumanDuration::from_secs(300),
            ..CachePolicy::default()
        }),
    )
    .await;
    assert_eq!(x_cache(&get(&gw, "/r/e").await), "MISS");
    gw.clock.advance(Duration::from_secs(20));
    app.script(|s| {
        s.status = 503;
        s.body = "down".into();
    });
    let stale = get(&gw, "/r/e").await;
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.text().await.unwrap(), "good");

    app.stop();
    let stale = get(&gw, "/r/e").await;
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(stale.text().await.unwrap(), "good");
    // A path never cached has nothing to fall back on.
    assert_eq!(get(&gw, "/r/never").await.status(), StatusCode::BAD_GATEWAY);
    // Past the window, the error shows.
    gw.clock.advance(Duration::from_secs(301));
    assert_eq!(get(&gw, "/r/e").await.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_upstream_request() {
    let app = App::start().await;
    let hold = Arc::new(tokio::sync::Notify::new());
    app.script(|s| {
        s.body = "shared".into();
        s.headers = vec![("cache-control".into(), "max-age=60".into())];
        s.hold = Some(hold.clone());
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let url = gw.url("/r/popular");
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let request = client().get(&url).send();
            tokio::spawn(async move {
                let r = request.await.unwrap();
                (x_cache(&r), r.text().await.unwrap())
            })
        })
        .collect();
    // Let the requests pile up behind the first, then let the upstream answer it. (A broken
    // coalescing would show as more upstream requests; the wait cannot make a correct one fail.)
    while app.hits() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.script(|s| s.hold = None);
    hold.notify_waiters();
    hold.notify_one();
    let mut outcomes = Vec::new();
    for r in requests {
        let (cache, body) = r.await.unwrap();
        assert_eq!(body, "shared");
        outcomes.push(cache);
    }
    assert_eq!(app.hits(), 1, "exactly one upstream request");
    assert_eq!(outcomes.iter().filter(|c| *c == "MISS").count(), 1);
    assert_eq!(outcomes.iter().filter(|c| *c == "HIT").count(), 99);
}

#[tokio::test]
async fn purge_by_url_pattern_and_tag() {
    let app = App::start().await;
    app.script(|s| {
        s.headers = vec![
            ("cache-control".into(), "max-age=60".into()),
            ("surrogate-key".into(), "habits user-7".into()),
        ]
    });
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    for path in ["/r/habits", "/r/habits?page=2", "/r/habits/1", "/r/other"] {
        let r = get(&gw, path).await;
        assert_eq!(x_cache(&r), "MISS");
        assert!(
            !r.headers().contains_key("surrogate-key"),
            "tags stay inside keel"
        );
    }
    assert_eq!(gw.gateway.purge(&Purge::Url("/r/habits?page=2".into())), 1);
    assert_eq!(x_cache(&get(&gw, "/r/habits?page=2").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/r/habits").await), "HIT");
    assert_eq!(gw.gateway.purge(&Purge::Pattern("/r/habits*".into())), 3);
    assert_eq!(x_cache(&get(&gw, "/r/habits/1").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/r/other").await), "HIT");
    assert_eq!(gw.gateway.purge(&Purge::Tag("user-7".into())), 2);
    assert_eq!(x_cache(&get(&gw, "/r/other").await), "MISS");
    assert_eq!(gw.gateway.purge(&Purge::Tag("nothing".into())), 0);
    // Entries of the API cache are never touched.
    gw.cache
        .set("gw-lookalike", "x".into(), Default::default())
        .unwrap();
    gw.gateway.purge(&Purge::Pattern("*".into()));
    assert!(gw.cache.get("gw-lookalike").is_some());
}

#[tokio::test]
async fn a_successful_write_purges_the_rule_s_patterns() {
    let app = App::start().await;
    app.script(|s| s.headers = vec![("cache-control".into(), "max-age=60".into())]);
    let gw = gateway_on_mock_clock(&app.url(), |c| {
        c.routes = vec![RouteRule {
            glob: Some("/r/habits/*".into()),
            methods: vec!["PUT".into(), "DELETE".into()],
            purge: vec!["/r/habits*".into()],
            ..RouteRule::default()
        }]
    })
    .await;
    get(&gw, "/r/habits").await;
    get(&gw, "/r/habits/42").await;
    assert_eq!(x_cache(&get(&gw, "/r/habits").await), "HIT");
    // A failed write purges nothing.
    app.script(|s| s.status = 409);
    client()
        .put(gw.url("/r/habits/42"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&get(&gw, "/r/habits").await), "HIT");
    app.script(|s| s.status = 200);
    let put = client()
        .put(gw.url("/r/habits/42"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(x_cache(&get(&gw, "/r/habits").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/r/habits/42").await), "MISS");
}

#[tokio::test]
async fn warming_fetches_through_the_cache() {
    let app = App::start().await;
    app.script(|s| s.headers = vec![("cache-control".into(), "max-age=60".into())]);
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let warmed = gw.gateway.warm("/r/warm?x=1").await.unwrap();
    assert_eq!((warmed.status, warmed.cache.as_str()), (200, "MISS"));
    assert_eq!(gw.gateway.warm("/r/warm?x=1").await.unwrap().cache, "HIT");
    assert_eq!(x_cache(&get(&gw, "/r/warm?x=1").await), "HIT");
    assert!(gw.gateway.warm("http://elsewhere/x").await.is_err());
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn disabled_caching_and_other_methods_bypass() {
    let app = App::start().await;
    app.script(|s| s.headers = vec![("cache-control".into(), "max-age=60".into())]);
    let gw = gateway_on_mock_clock(
        &app.url(),
        caching(CachePolicy {
            enabled: false,
            ..CachePolicy::default()
        }),
    )
    .await;
    let r = get(&gw, "/r/off").await;
    assert!(
        !r.headers().contains_key("x-cache"),
        "no cache on this route"
    );
    get(&gw, "/r/off").await;
    assert_eq!(app.hits(), 2);
    let post = client().post(gw.url("/other")).send().await.unwrap();
    assert_eq!(x_cache(&post), "BYPASS");
}

#[tokio::test]
async fn browser_cache_control_replaces_the_upstream_s() {
    let app = App::start().await;
    app.script(|s| s.headers = vec![("cache-control".into(), "s-maxage=600, max-age=0".into())]);
    let gw = gateway_on_mock_clock(
        &app.url(),
        caching(CachePolicy {
            browser_cache_control: Some("public, max-age=30".into()),
            ..CachePolicy::default()
        }),
    )
    .await;
    let first = get(&gw, "/r/b").await;
    assert_eq!(first.headers()["cache-control"], "public, max-age=30");
    let hit = get(&gw, "/r/b").await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(hit.headers()["cache-control"], "public, max-age=30");
}
