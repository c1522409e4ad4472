//! Pagination: moto answers every list in one page, so a proxy splits its answers into pages of 2
//! (and 1) items with IAM's IsTruncated/Marker. Every paged list must be followed to the end: the
//! records through the paging proxy equal the records straight from moto.

use crate::fixtures::{seed_standard, sync_with_strategy};
use crate::support::moto::{Moto, Seed, add_mfa_named, seed_user};
use crate::support::proxy::{Proxy, Rules};

/// seed_standard plus enough under /engineering/ that every list the collector pages has more
/// than 2 items somewhere: 10 users under the prefix; users with 2 tags/groups (exactly one full
/// page: IsTruncated false on a full page) and with 3 (two pages); keys in twos (IAM's quota is 2
/// per user, so ListAccessKeys only goes past one page at page size 1); a user with 3 virtual MFA
/// devices; 8 assigned virtual devices and 2 unassigned ones; GAAD: 12 users and 6 groups.
async fn seed(iam: &aws_sdk_iam::Client) {
    seed_standard(iam).await;
    let tags3: &[(&str, &str)] = &[("team", "paging"), ("tier", "3 ✓"), ("owner", "R&D")];
    let tags2: &[(&str, &str)] = &[("team", "paging"), ("tier", "2")];
    let groups3: &[&str] = &["pg-readers", "pg-writers", "developers"];
    let groups2: &[&str] = &["pg-readers", "oncall"];
    for i in 0..5 {
        let name = format!("pg-{i:02}");
        seed_user(
            iam,
            &Seed {
                name: &name,
                path: "/engineering/paged/",
                tags: if i % 2 == 0 { tags3 } else { tags2 },
                groups: if i % 2 == 0 { groups3 } else { groups2 },
                active_keys: if i < 3 { 2 } else { 1 },
                inactive_keys: usize::from(i == 3),
                mfa: i < 3,
                console: i % 2 == 1,
            },
        )
        .await;
    }
    seed_user(
        iam,
        &Seed {
            name: "pg-mfa",
            path: "/engineering/paged/",
            tags: &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")],
            groups: &["pg-readers", "pg-writers", "pg-auditors", "admins"],
            ..Default::default()
        },
    )
    .await;
    for d in ["pg-mfa-1", "pg-mfa-2", "pg-mfa-3"] {
        add_mfa_named(iam, "pg-mfa", d).await;
    }
    for d in ["spare-1", "spare-2"] {
        iam.create_virtual_mfa_device()
            .virtual_mfa_device_name(d)
            .send()
            .await
            .expect("unassigned virtual mfa");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_proxy_every_paged_list_is_followed_to_the_end() {
    let moto = Moto::start();
    seed(&moto.iam().await).await;

    for strategy in ["per-user", "bulk"] {
        let (_, clean) = sync_with_strategy(&moto.endpoint, strategy, "").await;
        assert_eq!(clean.len(), 10, "{strategy}");
        let pg_mfa = clean
            .iter()
            .find(|r| r["user"]["name"] == "pg-mfa")
            .unwrap();
        assert_eq!(
            pg_mfa["unmapped"]["user"]["mfa_devices"]
                .as_array()
                .map(Vec::len),
            Some(3),
            "{strategy}: {pg_mfa}"
        );

        for page_size in [2, 1] {
            let proxy = Proxy::start(
                &moto.endpoint,
                Rules {
                    page_size: Some(page_size),
                    ..Default::default()
                },
            )
            .await;
            let (_, paged) = sync_with_strategy(&proxy.endpoint, strategy, "").await;
            let (pages, followed) = (proxy.pages(), proxy.followed());
            eprintln!("{strategy}, page size {page_size}: pages {pages:?}, followed {followed:?}");
            assert_eq!(
                paged, clean,
                "{strategy}, page size {page_size}: paged records differ from moto's"
            );

            // Lists that must have gone past their first page: a marker was followed.
            let mut expected = vec!["ListUsers", "ListAccessKeys"];
            match strategy {
                "bulk" => {
                    expected.extend(["GetAccountAuthorizationDetails", "ListVirtualMFADevices"])
                }
                _ => expected.extend(["ListUserTags", "ListGroupsForUser", "ListMFADevices"]),
            }
            for action in expected {
                let served = pages.get(action).copied().unwrap_or(0);
                let follows = followed.get(action).copied().unwrap_or(0);
                assert!(
                    served > 1,
                    "{strategy}, page size {page_size}: {action} served {served} page(s): {pages:?}"
                );
                // Two keys at most per user: a second ListAccessKeys page needs page size 1.
                if action != "ListAccessKeys" || page_size == 1 {
                    assert!(
                        follows > 0,
                        "{strategy}, page size {page_size}: no {action} marker followed: {followed:?}"
                    );
                }
            }
            // The first page of each list was asked for without a marker; every other page with one.
            let calls = proxy.calls();
            for (action, served) in &pages {
                assert_eq!(calls.get(action), Some(served), "{action}: {calls:?}");
            }
            // Exact counts where they are known: ListUsers pages = ⌈10 users / page size⌉.
            assert_eq!(
                pages.get("ListUsers"),
                Some(&10u64.div_ceil(page_size as u64)),
                "{pages:?}"
            );
            if strategy == "bulk" {
                // GAAD(User, Group): 12 users + 6 groups; 8 assigned virtual devices.
                assert_eq!(
                    pages.get("GetAccountAuthorizationDetails"),
                    Some(&18u64.div_ceil(page_size as u64)),
                    "{pages:?}"
                );
                assert_eq!(
                    pages.get("ListVirtualMFADevices"),
                    Some(&8u64.div_ceil(page_size as u64)),
                    "{pages:?}"
                );
            }
        }
    }
}
