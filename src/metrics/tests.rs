use super::*;

#[test]
fn a_repeated_failure_is_logged_once_a_period_with_the_count_left_out() {
    let t = Throttle::default();
    assert_eq!(t.admit(15), Some(0));
    for _ in 0..5 {
        assert_eq!(t.admit(15), None);
    }
    // Fourteen seconds later (simulated by rewinding the clock it last logged at).
    t.last_second.fetch_sub(14, Ordering::Relaxed);
    assert_eq!(t.admit(15), None);
    t.last_second.fetch_sub(1, Ordering::Relaxed);
    assert_eq!(t.admit(15), Some(6));
}

#[test]
fn each_kind_of_failure_has_its_own_throttle() {
    let t = Throttles::default();
    assert_eq!(t.admit("consume", 15), Some(0));
    assert_eq!(t.admit("consume", 15), None);
    assert_eq!(t.admit("metadata", 15), Some(0));
}

#[test]
fn rendered_names_carry_the_prefix_and_counter_suffix() {
    let m = Metrics::new();
    m.records_consumed.inc_by(3);
    m.record_skipped("tombstone");
    let text = m.render();
    assert!(text.contains("sluice_records_consumed_total 3"), "{text}");
    assert!(text.contains("sluice_records_skipped_total{reason=\"tombstone\"} 1"), "{text}");
    assert!(text.contains("sluice_connections 0"), "{text}");
    assert!(!text.contains("cluster"), "cluster metrics without a cluster: {text}");
    assert!(Metrics::clustered().render().contains("sluice_cluster_up 0"));
}

#[test]
fn build_info_names_the_version() {
    let text = Metrics::new().render();
    let line = text.lines().find(|l| l.starts_with("sluice_build_info{")).expect(&text);
    assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
    assert!(text.contains("# TYPE sluice_build_info gauge"), "{text}");
}

#[test]
fn admin_latency_is_a_histogram_by_route_and_outcome() {
    let m = Metrics::new();
    m.admin_request("/api/clients/{id}".into(), "not_found", Duration::from_micros(300));
    let text = m.render();
    assert!(
        text.contains(
            "sluice_admin_request_duration_seconds_bucket{le=\"0.0005\",route=\"/api/clients/{id}\",outcome=\"not_found\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("sluice_admin_requests_total{outcome=\"not_found\"} 1"), "{text}");
}

#[test]
fn process_metrics_come_from_proc_without_a_prefix() {
    let stat = "4242 (sluice (main) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 \
                7 0 123400 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max open files            1024                 524288               files\n";
    let p = ProcessStats::parse(stat, boot, limits, 12, 100, 4096).unwrap();
    assert_eq!(p.cpu_seconds, 4.0);
    assert_eq!(p.threads, 7);
    assert_eq!(p.start_time_seconds, 1_700_001_234.0);
    assert_eq!(p.virtual_bytes, 104_857_600);
    assert_eq!(p.resident_bytes, 2560 * 4096);
    assert_eq!(p.max_fds, Some(1024));

    let text = Metrics::new().render();
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "process_max_fds ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
    }
    assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
}
