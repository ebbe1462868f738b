//! What an upload is, decided from its bytes alone: JPEG, PNG or WebP, and
//! the width and height its header declares, refused before anything
//! decodes it when they would make a decompression bomb.
//!
//! `imagesize` recognises the formats and reads the sizes. It is lenient
//! about what comes before the size fields (four bytes of PNG signature, no
//! IHDR check, no VP8 start code), so the exact signatures are checked here
//! too: bytes that merely begin like an image are not one.

use serde::{Serialize, Serializer};

use super::UploadError;
use crate::store::StoreError;

/// The contract's cap on one photo (section 11).
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// No phone camera takes wider photos; a decoder asked for more is being
/// asked to allocate, not to show a photo.
pub const MAX_SIDE: u32 = 8192;
/// 40 megapixels: about 160 MB once decoded to RGBA, the most a viewer
/// (the host's browser) should ever be made to allocate for one photo.
pub const MAX_PIXELS: u64 = 40_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
}

impl ImageKind {
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Webp => "image/webp",
        }
    }

    /// The file name's extension when served.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
        }
    }

    /// Back from the stored `content_type`.
    pub fn parse(mime: &str) -> Result<Self, StoreError> {
        match mime {
            "image/jpeg" => Ok(ImageKind::Jpeg),
            "image/png" => Ok(ImageKind::Png),
            "image/webp" => Ok(ImageKind::Webp),
            other => Err(StoreError::Corrupt(format!(
                "upload content type {other:?}"
            ))),
        }
    }
}

impl Serialize for ImageKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.mime())
    }
}

/// What the checks found in an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
}

const PNG_START: &[u8; 16] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR";

/// The type, from the signatures: `None` when the bytes are not recognisably
/// one of the three (whatever their name or `Content-Type` said).
fn kind_of(data: &[u8]) -> Option<ImageKind> {
    let claimed = match imagesize::image_type(data).ok()? {
        imagesize::ImageType::Jpeg => ImageKind::Jpeg,
        imagesize::ImageType::Png => ImageKind::Png,
        imagesize::ImageType::Webp => ImageKind::Webp,
        _ => return None,
    };
    let exact = match claimed {
        // SOI followed by a marker.
        ImageKind::Jpeg => data.starts_with(&[0xFF, 0xD8, 0xFF]),
        // The whole signature, then IHDR first, 13 bytes long, as PNG requires.
        ImageKind::Png => data.starts_with(PNG_START),
        ImageKind::Webp => matches!(data.get(12..16), Some(b"VP8 " | b"VP8L" | b"VP8X")),
    };
    exact.then_some(claimed)
}

/// The bitstream's own marks behind a WebP chunk header, without which the
/// size fields `imagesize` reads are just bytes.
fn webp_frame_ok(data: &[u8]) -> bool {
    match data.get(12..16) {
        // The key frame's start code.
        Some(b"VP8 ") => data.get(23..26) == Some(&[0x9D, 0x01, 0x2A]),
        // The lossless signature byte.
        Some(b"VP8L") => data.get(20) == Some(&0x2F),
        Some(b"VP8X") => data.len() >= 30,
        _ => false,
    }
}

/// Accepts a JPEG, PNG or WebP whose header declares a sane size.
///
/// 415 when the bytes are not one of the three; 400 when they are, but the
/// size in the header cannot be read or is too large.
pub fn check(data: &[u8]) -> Result<Checked, UploadError> {
    if data.len() > MAX_BYTES {
        return Err(UploadError::TooLarge);
    }
    if data.is_empty() {
        return Err(UploadError::Unsupported(
            "the body is empty: send the image's bytes".into(),
        ));
    }
    let kind = kind_of(data).ok_or_else(|| {
        UploadError::Unsupported(
            "only JPEG, PNG and WebP images are accepted (the type is read from the bytes)".into(),
        )
    })?;
    let unreadable =
        || UploadError::Invalid(format!("the {} header cannot be read", kind.extension()));
    if kind == ImageKind::Webp && !webp_frame_ok(data) {
        return Err(unreadable());
    }
    let size = imagesize::blob_size(data).map_err(|_| unreadable())?;
    // A VP8 frame's two scaling bits are counted as size: an image asking to
    // be upscaled is measured larger, never smaller.
    let (width, height) = match (u32::try_from(size.width), u32::try_from(size.height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        // Zero is not a size (a JPEG's height "defined later" included), and
        // a PNG's 32-bit fields may not fit the platform's notion of one.
        (Ok(_), Ok(_)) => return Err(unreadable()),
        _ => return Err(too_big(size.width, size.height)),
    };
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_big(size.width, size.height));
    }
    Ok(Checked {
        kind,
        width,
        height,
    })
}

fn too_big(width: usize, height: usize) -> UploadError {
    UploadError::Invalid(format!(
        "the image declares {width}x{height} pixels; at most {MAX_SIDE} on a side and {} megapixels",
        MAX_PIXELS / 1_000_000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by an encoder (Pillow), not by hand: the checks are tested on
    // what real software produces, not on headers made to pass them.
    /// Grayscale baseline JPEG, 1x1.
    const JPEG_1X1: &[u8] = &[
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x10, 0x0b, 0x0c, 0x0e, 0x0c,
        0x0a, 0x10, 0x0e, 0x0d, 0x0e, 0x12, 0x11, 0x10, 0x13, 0x18, 0x28, 0x1a, 0x18, 0x16, 0x16,
        0x18, 0x31, 0x23, 0x25, 0x1d, 0x28, 0x3a, 0x33, 0x3d, 0x3c, 0x39, 0x33, 0x38, 0x37, 0x40,
        0x48, 0x5c, 0x4e, 0x40, 0x44, 0x57, 0x45, 0x37, 0x38, 0x50, 0x6d, 0x51, 0x57, 0x5f, 0x62,
        0x67, 0x68, 0x67, 0x3e, 0x4d, 0x71, 0x79, 0x70, 0x64, 0x78, 0x5c, 0x65, 0x67, 0x63, 0xff,
        0xc0, 0x00, 0x0b, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00,
        0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xc4, 0x00, 0x14, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xda, 0x00, 0x08,
        0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0x3f, 0xff, 0xd9,
    ];

    /// Colour baseline JPEG, 3x2.
    const JPEG_3X2: &[u8] = &[
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x10, 0x0b, 0x0c, 0x0e, 0x0c,
        0x0a, 0x10, 0x0e, 0x0d, 0x0e, 0x12, 0x11, 0x10, 0x13, 0x18, 0x28, 0x1a, 0x18, 0x16, 0x16,
        0x18, 0x31, 0x23, 0x25, 0x1d, 0x28, 0x3a, 0x33, 0x3d, 0x3c, 0x39, 0x33, 0x38, 0x37, 0x40,
        0x48, 0x5c, 0x4e, 0x40, 0x44, 0x57, 0x45, 0x37, 0x38, 0x50, 0x6d, 0x51, 0x57, 0x5f, 0x62,
        0x67, 0x68, 0x67, 0x3e, 0x4d, 0x71, 0x79, 0x70, 0x64, 0x78, 0x5c, 0x65, 0x67, 0x63, 0xff,
        0xdb, 0x00, 0x43, 0x01, 0x11, 0x12, 0x12, 0x18, 0x15, 0x18, 0x2f, 0x1a, 0x1a, 0x2f, 0x63,
        0x42, 0x38, 0x42, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63,
        0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63,
        0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63,
        0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0x63, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00, 0x02,
        0x00, 0x03, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x00,
        0x15, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x06, 0xff, 0xc4, 0x00, 0x14, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xc4, 0x00,
        0x14, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xc4, 0x00, 0x14, 0x11, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xda, 0x00, 0x0c,
        0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0x80, 0x00, 0x1f, 0xff, 0xd9,
    ];

    /// RGB PNG, 1x1.
    const PNG_1X1: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90,
        0x77, 0x53, 0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x38,
        0x21, 0x67, 0x03, 0x00, 0x02, 0xd4, 0x01, 0x23, 0x72, 0x62, 0xd8, 0x76, 0x00, 0x00, 0x00,
        0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];

    /// Lossless WebP (VP8L), 1x1.
    const WEBP_1X1: &[u8] = &[
        0x52, 0x49, 0x46, 0x46, 0x1e, 0x00, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38,
        0x4c, 0x11, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x07, 0x50, 0x8f, 0x22, 0x97,
        0xa7, 0xff, 0x81, 0x88, 0xe8, 0x7f, 0x00, 0x00,
    ];

    /// Lossy WebP (VP8), 3x2.
    const WEBP_LOSSY_3X2: &[u8] = &[
        0x52, 0x49, 0x46, 0x46, 0x34, 0x00, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38,
        0x20, 0x28, 0x00, 0x00, 0x00, 0x70, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x03, 0x00, 0x02, 0x00,
        0x02, 0xc0, 0x4c, 0x25, 0xa0, 0x02, 0x74, 0x01, 0x40, 0x00, 0x00, 0xfe, 0xec, 0xbd, 0x88,
        0xc2, 0x69, 0x27, 0x47, 0xff, 0x3d, 0x33, 0xff, 0x60, 0x7f, 0xf2, 0x47, 0xc2, 0xc0, 0x00,
    ];

    /// Extended WebP (VP8X, with an alpha chunk), 5x4.
    const WEBP_ALPHA_5X4: &[u8] = &[
        0x52, 0x49, 0x46, 0x46, 0x58, 0x00, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38,
        0x58, 0x0a, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x41, 0x4c, 0x50, 0x48, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x07, 0x50, 0xb2, 0x88, 0x08, 0x44,
        0x44, 0xff, 0x03, 0x56, 0x50, 0x38, 0x20, 0x28, 0x00, 0x00, 0x00, 0x70, 0x01, 0x00, 0x9d,
        0x01, 0x2a, 0x05, 0x00, 0x04, 0x00, 0x02, 0xc0, 0x4c, 0x25, 0xa0, 0x02, 0x74, 0x01, 0x40,
        0x00, 0x00, 0xfe, 0xec, 0xbd, 0x88, 0xc2, 0x69, 0x27, 0x47, 0xff, 0x3d, 0x33, 0xff, 0x60,
        0x7f, 0xf2, 0x47, 0xc2, 0xc0, 0x00,
    ];

    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        let mut png = PNG_START.to_vec();
        png.extend_from_slice(&width.to_be_bytes());
        png.extend_from_slice(&height.to_be_bytes());
        // Depth, colour type, compression, filter, interlace; then a CRC the
        // checks never verify (nothing here decodes).
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        png
    }

    fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = JPEG_1X1.to_vec();
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("the sample has a baseline SOF");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    fn webp_declaring(width: u32, height: u32) -> Vec<u8> {
        let mut webp = WEBP_ALPHA_5X4.to_vec();
        webp[24..27].copy_from_slice(&(width - 1).to_le_bytes()[..3]);
        webp[27..30].copy_from_slice(&(height - 1).to_le_bytes()[..3]);
        webp
    }

    fn size(data: &[u8]) -> (ImageKind, u32, u32) {
        let c = check(data).expect("accepted");
        (c.kind, c.width, c.height)
    }

    fn is_unsupported(data: &[u8]) -> bool {
        matches!(check(data), Err(UploadError::Unsupported(_)))
    }

    fn is_invalid(data: &[u8]) -> bool {
        matches!(check(data), Err(UploadError::Invalid(_)))
    }

    #[test]
    fn real_images_of_each_format_are_accepted_with_their_size() {
        assert_eq!(size(JPEG_1X1), (ImageKind::Jpeg, 1, 1));
        assert_eq!(size(JPEG_3X2), (ImageKind::Jpeg, 3, 2));
        assert_eq!(size(PNG_1X1), (ImageKind::Png, 1, 1));
        assert_eq!(size(WEBP_1X1), (ImageKind::Webp, 1, 1));
        assert_eq!(size(WEBP_LOSSY_3X2), (ImageKind::Webp, 3, 2));
        assert_eq!(size(WEBP_ALPHA_5X4), (ImageKind::Webp, 5, 4));
    }

    #[test]
    fn anything_else_is_an_unsupported_type_whatever_it_is_called() {
        assert!(is_unsupported(b""));
        assert!(is_unsupported(b"#!/bin/sh\nrm -rf /\n"));
        assert!(is_unsupported(
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>"
        ));
        assert!(is_unsupported(
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
        ));
        assert!(is_unsupported(
            b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00"
        ));
        // Begins like a PNG, but the signature stops short or goes wrong.
        assert!(is_unsupported(b"\x89PNG"));
        assert!(is_unsupported(b"\x89PNG\r\n"));
        assert!(is_unsupported(
            b"\x89PNG<html><script>alert(1)</script></html>"
        ));
        assert!(is_unsupported(&PNG_1X1[..8]));
        // The whole signature, but not IHDR first.
        let mut png = PNG_1X1.to_vec();
        png[12..16].copy_from_slice(b"tEXt");
        assert!(is_unsupported(&png));
        // RIFF, but not a WebP, or a WebP without an image chunk.
        assert!(is_unsupported(
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
        ));
        let mut webp = WEBP_1X1.to_vec();
        webp[12..16].copy_from_slice(b"ICCP");
        assert!(is_unsupported(&webp));
        // Too short to name a type at all.
        assert!(is_unsupported(&[0xFF, 0xD8]));
        assert!(is_unsupported(&JPEG_1X1[..11]));
    }

    #[test]
    fn a_recognised_image_whose_size_cannot_be_read_is_refused() {
        // IHDR named, its fields cut off.
        assert!(is_invalid(&PNG_1X1[..16]));
        assert!(is_invalid(&PNG_1X1[..20]));
        assert!(is_invalid(&png_declaring(0, 10)));
        // A JPEG that ends before its frame header, or has none.
        assert!(is_invalid(&JPEG_1X1[..40]));
        assert!(is_invalid(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01"));
        assert!(is_invalid(b"\xff\xd8\xff\xd9\0\0\0\0\0\0\0\0"));
        assert!(is_invalid(&jpeg_declaring(1, 0)));
        // A WebP chunk header without its bitstream's marks, or cut short.
        let mut lossy = WEBP_LOSSY_3X2.to_vec();
        lossy[23] = 0;
        assert!(is_invalid(&lossy));
        let mut lossless = WEBP_1X1.to_vec();
        lossless[20] = 0;
        assert!(is_invalid(&lossless));
        assert!(is_invalid(&WEBP_ALPHA_5X4[..26]));
    }

    #[test]
    fn a_declared_size_past_the_bounds_is_refused_before_any_decoding() {
        assert!(is_invalid(&png_declaring(100_000, 100_000)));
        assert!(is_invalid(&png_declaring(u32::MAX, u32::MAX)));
        assert!(is_invalid(&png_declaring(MAX_SIDE + 1, 1)));
        assert!(is_invalid(&png_declaring(1, MAX_SIDE + 1)));
        assert_eq!(
            size(&png_declaring(MAX_SIDE, 1)),
            (ImageKind::Png, MAX_SIDE, 1)
        );
        // 40 megapixels: 8192 x 4882 is under, 8192 x 4883 over.
        assert!(check(&png_declaring(8192, 4882)).is_ok());
        assert!(is_invalid(&png_declaring(8192, 4883)));
        assert!(is_invalid(&jpeg_declaring(65_535, 65_535)));
        assert_eq!(
            size(&jpeg_declaring(4000, 3000)),
            (ImageKind::Jpeg, 4000, 3000)
        );
        assert!(is_invalid(&webp_declaring(16_384, 16_384)));
        assert_eq!(
            size(&webp_declaring(8192, 4096)),
            (ImageKind::Webp, 8192, 4096)
        );
        let Err(UploadError::Invalid(why)) = check(&png_declaring(100_000, 100_000)) else {
            panic!("refused");
        };
        assert!(why.contains("100000x100000"), "{why}");
    }

    #[test]
    fn two_mib_is_the_most_an_image_may_weigh() {
        let mut padded = PNG_1X1.to_vec();
        padded.resize(MAX_BYTES, 0);
        assert_eq!(size(&padded), (ImageKind::Png, 1, 1));
        padded.push(0);
        assert!(matches!(check(&padded), Err(UploadError::TooLarge)));
    }
}
