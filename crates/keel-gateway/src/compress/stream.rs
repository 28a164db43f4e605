//! Streaming compression: each piece of the upstream's body is compressed and flushed as it
//! arrives, so a slow or endless response (server-sent events) reaches the client piece by piece.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use super::Encoding;

/// One of the encoders, writing into a buffer that is drained after every piece.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub(crate) fn new(encoding: Encoding, level: i32) -> io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            // A 4 MiB window (lgwin 22) as browsers expect.
            Encoding::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                level.clamp(0, 11) as u32,
                22,
            ))),
            Encoding::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level)?),
        })
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Gzip(e) => e.get_mut(),
            Self::Br(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        }
    }

    /// Compresses `data`, flushes, and returns the bytes produced so far.
    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<Bytes> {
        self.write_all(data)?;
        self.flush()?;
        Ok(Bytes::from(std::mem::take(self.output())))
    }

    /// Ends the stream; returns the remaining bytes.
    pub(crate) fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Br(e) => Ok(e.into_inner()),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(e) => e.write(buf),
            Self::Br(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Gzip(e) => e.flush(),
            Self::Br(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}

/// A body compressed on the way through.
pub(crate) struct Compressing<B> {
    inner: B,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Bytes in and out so far, and where the difference is counted at the end.
    read: u64,
    written: u64,
    stats: Option<std::sync::Arc<crate::stats::RouteStats>>,
}

impl<B> Compressing<B> {
    pub(crate) fn new(inner: B, encoder: Encoder) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            read: 0,
            written: 0,
            stats: None,
        }
    }

    /// Counts the bytes compression saved in `stats` when the body ends.
    pub(crate) fn saving_into(mut self, stats: std::sync::Arc<crate::stats::RouteStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    fn finished(&mut self) {
        if let Some(stats) = self.stats.take() {
            crate::stats::RouteStats::add(
                &stats.bytes_saved,
                self.read.saturating_sub(self.written),
            );
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for Compressing<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: the compressed body is a new representation.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let out = encoder.push(&data)?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) => {
                    let rest = this.encoder.take().expect("checked above").finish()?;
                    this.written += rest.len() as u64;
                    this.finished();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    fn decode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => out = zstd::stream::decode_all(data).unwrap(),
        }
        out
    }

    #[tokio::test]
    async fn each_encoding_round_trips_piece_by_piece() {
        let pieces: Vec<Bytes> = (0..20)
            .map(|i| {
                Bytes::from(format!(
                    "{{\"piece\":{i},\"text\":\"{}\"}}\n",
                    "abc".repeat(50)
                ))
            })
            .collect();
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let stream = futures_util::stream::iter(
                pieces
                    .clone()
                    .into_iter()
                    .map(|p| Ok::<_, std::io::Error>(Frame::data(p))),
            );
            let body = http_body_util::StreamBody::new(stream);
            let encoder = Encoder::new(encoding, 3).unwrap();
            let mut compressing = Compressing::new(body, encoder);
            let mut out = Vec::new();
            let mut frames = 0;
            while let Some(frame) = compressing.frame().await {
                out.extend_from_slice(&frame.unwrap().into_data().unwrap());
                frames += 1;
            }
            assert!(frames > 1, "{encoding:?}: flushed as it went");
            assert!(
                out.len() < whole.len() / 3,
                "{encoding:?}: {} bytes",
                out.len()
            );
            assert_eq!(decode(encoding, &out), whole, "{encoding:?}");
        }
    }
}
