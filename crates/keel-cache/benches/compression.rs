//! Which compressor the cache should use: LZ4 (lz4_flex) vs zstd levels 1 and 3 on JSON API
//! payloads of 4 KiB and 64 KiB — compress and decompress speed, and the size ratio (printed).
//!
//! `cargo bench -p keel-cache --bench compression`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn payload(len: usize) -> Vec<u8> {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < len {
        out.push_str(&format!(
            r#"{{"id":{i},"name":"user-{i}","email":"user{i}@example.com","active":{},"score":{},"tags":["a","b{}"]}},"#,
            i % 3 == 0,
            (i * 7919) % 1000,
            i % 17
        ));
        i += 1;
    }
    out.truncate(len);
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    for len in [4 * 1024, 64 * 1024] {
        let data = payload(len);
        let lz4 = lz4_flex::compress_prepend_size(&data);
        let z1 = zstd::bulk::compress(&data, 1).unwrap();
        let z3 = zstd::bulk::compress(&data, 3).unwrap();
        println!(
            "{len} bytes: lz4 {:.1}%, zstd-1 {:.1}%, zstd-3 {:.1}% of original",
            lz4.len() as f64 * 100.0 / len as f64,
            z1.len() as f64 * 100.0 / len as f64,
            z3.len() as f64 * 100.0 / len as f64
        );
        let mut group = c.benchmark_group(format!("compress/{len}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("lz4", |b| b.iter(|| lz4_flex::compress_prepend_size(&data)));
        // zstd gets reused contexts, its fastest way to run.
        let mut c1 = zstd::bulk::Compressor::new(1).unwrap();
        group.bench_function("zstd-1", |b| b.iter(|| c1.compress(&data).unwrap()));
        let mut c3 = zstd::bulk::Compressor::new(3).unwrap();
        group.bench_function("zstd-3", |b| b.iter(|| c3.compress(&data).unwrap()));
        group.finish();
        let mut group = c.benchmark_group(format!("decompress/{len}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("lz4", |b| {
            b.iter(|| lz4_flex::decompress_size_prepended(&lz4).unwrap())
        });
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        group.bench_function("zstd-1", |b| b.iter(|| d.decompress(&z1, len).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
