//! The tokio adapters `File::reader` (`AsyncRead + AsyncBufRead + AsyncSeek`) and
//! `File::writer` (`AsyncWrite`), compared with `std::fs` byte for byte, under both tokio
//! runtime flavours.

mod common;

use std::io::{self, SeekFrom};

use common::{
    assert_bytes, cache_on, make_file, on_runtimes, on_tokio_runtimes, pattern, ro, scratch_dir,
};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uringcache::{Backend, OpenOptions};

const SIZES: &[usize] = &[
    0,
    1,
    4095,
    4096,
    4097,
    65536,
    65537,
    (300 << 10) + 123,
    3 << 20,
];

fn rw_create() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true);
    o
}

common::backend_test!(read_to_end_matches_std_fs);
fn read_to_end_matches_std_fs(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        for (i, &len) in SIZES.iter().enumerate() {
            let (path, data) = make_file(dir.path(), &format!("f{i}"), len, 10 + i as u64);
            // A budget smaller than the larger files, so reads also evict.
            for frames in [16usize, 1024] {
                let cache = cache_on(backend, frames);
                let file = cache.open(&path, &ro()).await?;
                for capacity in [None, Some(1), Some(4096), Some(5000), Some(1 << 20)] {
                    let mut reader = match capacity {
                        None => file.reader(0),
                        Some(c) => uringcache::Reader::with_capacity(file.clone(), 0, c),
                    };
                    assert_eq!(reader.capacity() % 4096, 0, "capacity rounds to 4 KiB");
                    let mut got = Vec::new();
                    let n = reader.read_to_end(&mut got).await?;
                    assert_eq!(
                        n, len,
                        "read_to_end count, len {len}, capacity {capacity:?}"
                    );
                    assert_bytes(
                        &got,
                        &data,
                        &format!("read_to_end len {len} cap {capacity:?}"),
                    );
                    assert_eq!(reader.position(), len as u64);
                    // At the end it stays at the end.
                    assert_eq!(reader.read(&mut [0u8; 16]).await?, 0);
                }
                // From a middle offset.
                let start = len / 3;
                let mut got = Vec::new();
                file.reader(start as u64).read_to_end(&mut got).await?;
                assert_bytes(&got, &data[start..], &format!("from {start}, len {len}"));
            }
        }
        Ok(())
    });
}

common::backend_test!(small_reads_through_poll_read);
fn small_reads_through_poll_read(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = (200 << 10) + 77;
        let (path, data) = make_file(dir.path(), "small", len, 3);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &ro()).await?;
        let mut reader = file.reader(0);
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_bytes(&got, &data, "7-byte reads");
        Ok(())
    });
}

common::backend_test!(seek_start_end_current_then_read);
fn seek_start_end_current_then_read(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = (1 << 20) + 1000;
        let (path, data) = make_file(dir.path(), "seek", len, 4);
        let cache = cache_on(backend, 256);
        let file = cache.open(&path, &ro()).await?;
        let mut reader = file.reader(0);

        // Read a little, then seek from the start and read to the end again.
        let mut head = [0u8; 100];
        reader.read_exact(&mut head).await?;
        assert_bytes(&head, &data[..100], "head");
        assert_eq!(reader.stream_position().await?, 100);

        assert_eq!(reader.seek(SeekFrom::Start(500_000)).await?, 500_000);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await?;
        assert_bytes(&got, &data[500_000..], "after SeekFrom::Start");

        // From the end.
        assert_eq!(
            reader.seek(SeekFrom::End(-5000)).await?,
            (len - 5000) as u64
        );
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await?;
        assert_bytes(&got, &data[len - 5000..], "after SeekFrom::End");

        // Relative, backwards and forwards, from the logical position (not the buffer's end).
        reader.seek(SeekFrom::Start(10_000)).await?;
        let mut b = [0u8; 10];
        reader.read_exact(&mut b).await?;
        assert_eq!(reader.seek(SeekFrom::Current(-20)).await?, 9_990);
        let mut b = vec![0u8; 30];
        reader.read_exact(&mut b).await?;
        assert_bytes(&b, &data[9_990..10_020], "after SeekFrom::Current(-20)");
        assert_eq!(reader.seek(SeekFrom::Current(300_000)).await?, 310_020);
        let mut b = vec![0u8; 70_000];
        reader.read_exact(&mut b).await?;
        assert_bytes(&b, &data[310_020..380_020], "after SeekFrom::Current(+)");
        assert_eq!(reader.seek(SeekFrom::Current(0)).await?, 380_020);

        // Past the end: reads return nothing.
        assert_eq!(reader.seek(SeekFrom::End(10)).await?, len as u64 + 10);
        assert_eq!(reader.read(&mut b).await?, 0);
        Ok(())
    });
}

common::backend_test!(seek_within_buffer_keeps_it_and_leaving_discards_it);
fn seek_within_buffer_keeps_it_and_leaving_discards_it(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "buf", 1 << 20, 5);
        let cache = cache_on(backend, 256);
        let file = cache.open(&path, &ro()).await?;
        let mut reader = uringcache::Reader::with_capacity(file.clone(), 0, 64 << 10);
        let chunk = reader.fill_buf().await?.to_vec();
        assert_eq!(chunk.len(), 64 << 10);
        assert_bytes(&chunk, &data[..64 << 10], "first fill");

        reader.seek(SeekFrom::Start(1000)).await?;
        assert_eq!(
            reader.buffer().len(),
            (64 << 10) - 1000,
            "seek inside keeps the buffer"
        );
        reader.seek(SeekFrom::Current(-600)).await?;
        assert_eq!(reader.buffer().len(), (64 << 10) - 400);
        assert_bytes(&reader.buffer()[..8], &data[400..408], "buffer at 400");

        reader.seek(SeekFrom::Start(64 << 10)).await?;
        assert!(reader.buffer().is_empty(), "seek out discards the buffer");
        let chunk = reader.fill_buf().await?.to_vec();
        assert_bytes(&chunk, &data[64 << 10..128 << 10], "fill after seek");

        // An unaligned position: the fill ends on a 4 KiB boundary.
        reader.seek(SeekFrom::Start(5000)).await?;
        let chunk = reader.fill_buf().await?.to_vec();
        assert_eq!(5000 + chunk.len(), (64 << 10) + 4096);
        assert_bytes(&chunk, &data[5000..5000 + chunk.len()], "unaligned fill");
        Ok(())
    });
}

common::backend_test!(negative_and_overflowing_seeks_fail_and_keep_the_position);
fn negative_and_overflowing_seeks_fail_and_keep_the_position(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "neg", 10_000, 6);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &ro()).await?;
        let mut reader = file.reader(0);
        reader.seek(SeekFrom::Start(100)).await?;
        for bad in [
            SeekFrom::Current(-101),
            SeekFrom::End(-10_001),
            SeekFrom::End(i64::MIN),
        ] {
            let err = reader.seek(bad).await.expect_err("negative seek must fail");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {err}");
            assert!(err.to_string().contains("negative"), "{err}");
        }
        reader.seek(SeekFrom::Start(u64::MAX)).await?;
        let err = reader
            .seek(SeekFrom::Current(1))
            .await
            .expect_err("overflow");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(reader.stream_position().await?, u64::MAX);
        assert_eq!(reader.read(&mut [0u8; 8]).await?, 0);
        reader.seek(SeekFrom::Start(100)).await?;
        let mut b = [0u8; 50];
        reader.read_exact(&mut b).await?;
        assert_bytes(&b, &data[100..150], "after failed seeks");
        Ok(())
    });
}

common::backend_test!(random_seeks_and_reads_match_std_fs);
fn random_seeks_and_reads_match_std_fs(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let len = (700 << 10) + 5;
        let (path, data) = make_file(dir.path(), "rand", len, 7);
        let cache = cache_on(backend, 32);
        let file = cache.open(&path, &ro()).await?;
        let mut reader = uringcache::Reader::with_capacity(file.clone(), 0, 16 << 10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut pos = 0u64;
        for step in 0..400 {
            let target = match rng.gen_range(0..4) {
                0 => SeekFrom::Start(rng.gen_range(0..len as u64 + 100)),
                1 => SeekFrom::End(-rng.gen_range(0..len as i64)),
                2 => SeekFrom::Current(rng.gen_range(-(pos.min(50_000) as i64)..50_000)),
                _ => SeekFrom::Current(0),
            };
            pos = reader.seek(target).await?;
            let want = usize::try_from(pos).unwrap().min(len);
            let mut buf = vec![0u8; rng.gen_range(1..40_000)];
            let mut got = 0;
            while got < buf.len() {
                let n = reader.read(&mut buf[got..]).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let end = (want + buf.len()).min(len);
            assert_eq!(got, end - want, "step {step}: read at {pos}");
            assert_bytes(
                &buf[..got],
                &data[want..end],
                &format!("step {step} at {pos}"),
            );
            pos += got as u64;
        }
        Ok(())
    });
}

common::backend_test!(read_line_and_lines_match_std);
fn read_line_and_lines_match_std(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        // Short lines, an empty one, and lines longer than the reader's buffer, no final newline.
        let mut text = String::new();
        for i in 0..5000 {
            match i % 1000 {
                0 => text.push('\n'),
                999 => text.push_str(&format!("{}\n", "x".repeat(100_000 + i))),
                _ => text.push_str(&format!("line {i}: {}\n", "ab".repeat(i % 37))),
            }
        }
        text.push_str("no newline at the end");
        let path = dir.path().join("text.txt");
        std::fs::write(&path, &text)?;
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &ro()).await?;

        let mut lines = file.reader(0).lines();
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await? {
            got.push(line);
        }
        let want: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "line {i} differs");
        }

        let mut reader = file.reader(0);
        let mut line = String::new();
        assert_eq!(reader.read_line(&mut line).await?, 1);
        assert_eq!(line, "\n");
        line.clear();
        reader.read_line(&mut line).await?;
        assert_eq!(line, "line 1: ab\n");
        // Seek to the last line and read it.
        reader.seek(SeekFrom::End(-21)).await?;
        line.clear();
        assert_eq!(reader.read_line(&mut line).await?, 21);
        assert_eq!(line, "no newline at the end");
        line.clear();
        assert_eq!(reader.read_line(&mut line).await?, 0);
        Ok(())
    });
}

common::backend_test!(many_small_writes_then_shutdown_match_std_fs);
fn many_small_writes_then_shutdown_match_std_fs(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let path = dir.path().join("out");
        let len = (1 << 20) + 333;
        let data = pattern(len, 8);
        let cache = cache_on(backend, 128);
        let file = cache.open(&path, &rw_create()).await?;
        let mut writer = file.writer(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pos = 0;
        while pos < len {
            let n = rng.gen_range(1..300).min(len - pos);
            writer.write_all(&data[pos..pos + n]).await?;
            pos += n;
            assert_eq!(writer.position(), pos as u64);
        }
        writer.shutdown().await?;
        assert!(writer.buffer().is_empty());
        // Flushed into the cache: every reader sees it, before any sync.
        assert_eq!(file.len(), len as u64);
        let mut got = Vec::new();
        file.reader(0).read_to_end(&mut got).await?;
        assert_bytes(&got, &data, "read back through the cache");

        writer.sync_all().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "std::fs after sync_all");
        drop(writer);
        cache.shutdown().await?;
        assert_bytes(&common::read_disk(&path)?, &data, "std::fs after shutdown");
        Ok(())
    });
}

common::backend_test!(buffered_bytes_reach_the_cache_on_flush_not_before);
fn buffered_bytes_reach_the_cache_on_flush_not_before(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut data) = make_file(dir.path(), "flush", 20_000, 9);
        let cache = cache_on(backend, 64);
        let file = cache.open(&path, &rw_create()).await?;
        let mut writer = uringcache::Writer::with_capacity(file.clone(), 5000, 8192);
        writer.write_all(b"hello").await?;
        assert_eq!(writer.buffer(), b"hello");
        let mut b = [0u8; 5];
        file.read_exact_at(&mut b, 5000).await?;
        assert_eq!(&b, &data[5000..5005], "not in the cache before flush");

        writer.flush().await?;
        file.read_exact_at(&mut b, 5000).await?;
        assert_eq!(&b, b"hello", "in the cache after flush");
        data[5000..5005].copy_from_slice(b"hello");

        // Past the end: the file grows; writes larger than the buffer go in several pieces.
        let tail = pattern(50_000, 10);
        let mut writer = uringcache::Writer::with_capacity(file.clone(), 19_000, 8192);
        writer.write_all(&tail).await?;
        writer.sync_data().await?;
        data.truncate(19_000);
        data.extend_from_slice(&tail);
        assert_eq!(file.len(), data.len() as u64);
        file.sync_all().await?;
        assert_bytes(
            &common::read_disk(&path)?,
            &data,
            "std::fs after overwrite and extend",
        );
        Ok(())
    });
}

common::backend_test!(copy_between_files_through_reader_and_writer);
fn copy_between_files_through_reader_and_writer(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (src, data) = make_file(dir.path(), "src", (3 << 20) + 4321, 11);
        let dst = dir.path().join("dst");
        let cache = cache_on(backend, 256);
        let input = cache.open(&src, &ro()).await?;
        let output = cache.open(&dst, &rw_create()).await?;
        let mut reader = input.reader(0);
        let mut writer = output.writer(0);
        let n = tokio::io::copy_buf(&mut reader, &mut writer).await?;
        assert_eq!(n, data.len() as u64);
        writer.shutdown().await?;
        writer.sync_all().await?;
        assert_bytes(&common::read_disk(&dst)?, &data, "copy_buf");

        // tokio::io::copy (AsyncRead into the writer) to a second file.
        let dst2 = dir.path().join("dst2");
        let output2 = cache.open(&dst2, &rw_create()).await?;
        let mut writer2 = output2.writer(0);
        let n = tokio::io::copy(&mut input.reader(0), &mut writer2).await?;
        assert_eq!(n, data.len() as u64);
        writer2.shutdown().await?;
        output2.sync_all().await?;
        assert_bytes(&common::read_disk(&dst2)?, &data, "copy");
        Ok(())
    });
}

common::backend_test!(reader_sees_bytes_appended_after_reaching_the_end);
fn reader_sees_bytes_appended_after_reaching_the_end(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, mut data) = make_file(dir.path(), "grow", 3000, 12);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &rw_create()).await?;
        let mut reader = file.reader(0);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await?;
        assert_bytes(&got, &data, "before append");
        let more = pattern(10_000, 13);
        let mut writer = file.writer(3000);
        writer.write_all(&more).await?;
        writer.shutdown().await?;
        data.extend_from_slice(&more);
        got.clear();
        reader.read_to_end(&mut got).await?;
        assert_bytes(&got, &data[3000..], "appended bytes");
        Ok(())
    });
}

common::backend_test!(writer_errors_keep_the_buffer_and_name_the_cause);
fn writer_errors_keep_the_buffer_and_name_the_cause(backend: Backend) {
    on_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "ro", 4096, 14);
        let cache = cache_on(backend, 16);
        let file = cache.open(&path, &ro()).await?;
        let mut writer = file.writer(0);
        writer.write_all(b"nope").await?;
        let err = writer.flush().await.expect_err("read-only handle");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert_eq!(writer.buffer(), b"nope", "bytes kept after a failed flush");
        let err = writer.shutdown().await.expect_err("still read-only");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let err = writer.sync_all().await.expect_err("sync flushes first");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert_eq!(common::read_disk(&path)?, data);
        Ok(())
    });
}

common::backend_test!(adapters_are_send_and_static);
fn adapters_are_send_and_static(backend: Backend) {
    fn check<T: Send + Unpin + 'static>() {}
    check::<uringcache::Reader>();
    check::<uringcache::Writer>();
    // And they run on spawned tasks (on_runtimes spawns on the multi-thread runtime).
    on_tokio_runtimes(move || async move {
        let dir = scratch_dir();
        let (path, data) = make_file(dir.path(), "spawn", 100_000, 15);
        let cache = cache_on(backend, 32);
        let file = cache.open(&path, &ro()).await?;
        let reader = file.reader(0);
        let got = tokio::spawn(async move {
            let mut reader = reader;
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.map(|_| got)
        })
        .await
        .expect("task")?;
        assert_bytes(&got, &data, "on a spawned task");
        Ok(())
    });
}
