//! Objects in an S3 bucket through aws-sdk-s3, with credentials from the config only.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::{Attempt, ListedObject, ObjectError, S3Config};

pub(crate) struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_bytes: usize,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// Sorts an SDK error into worth-retrying or not.
fn attempt<E>(e: SdkError<E, HttpResponse>) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("").to_owned();
            let message = service.err().message().unwrap_or("").to_owned();
            let status = service.raw().status().as_u16();
            let detail = format!("HTTP {status} {code} {message}").trim().to_owned();
            if status == 404 || code == "NoSuchKey" || code == "NotFound" {
                Attempt::NotFound
            } else if status >= 500
                || status == 429
                || code == "SlowDown"
                || code == "RequestTimeout"
                || code == "InternalError"
            {
                Attempt::Transient(detail)
            } else {
                Attempt::Permanent(detail)
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Attempt::Transient(error_chain(&e))
        }
        _ => Attempt::Permanent(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

impl S3Store {
    pub(crate) fn new(config: &S3Config) -> Result<Self, ObjectError> {
        if config.bucket.is_empty() {
            return Err(ObjectError::Config("archive.s3.bucket is empty".into()));
        }
        if config.part_bytes < 5 << 20 {
            return Err(ObjectError::Config(
                "archive.s3.part_bytes must be at least 5 MiB (S3's smallest part)".into(),
            ));
        }
        if config.access_key_id.is_empty() || config.secret_access_key.is_empty() {
            return Err(ObjectError::Config(
                "archive.s3 needs access_key_id and secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into(),
            ));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.clone(),
                None,
                None,
                "journeyd config",
            ))
            .http_client(http)
            .force_path_style(config.path_style)
            // journeyd retries itself, so that every retry is logged and counted.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(config.attempt_timeout)
                    .build(),
            )
            // Checksums only where S3 requires them: several S3-compatible servers do not take
            // the streaming checksum trailers newer SDKs send by default. journeyd verifies
            // every upload by reading it back and comparing SHA-256 instead.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(config.endpoint.clone());
        }
        let prefix = if config.prefix.is_empty() || config.prefix.ends_with('/') {
            config.prefix.clone()
        } else {
            format!("{}/", config.prefix)
        };
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix,
            part_bytes: config.part_bytes,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) async fn ensure_bucket(&self) -> Result<(), Attempt> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => match attempt(e) {
                Attempt::NotFound => {}
                other => return Err(other),
            },
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(attempt(e)),
        }
    }

    pub(crate) async fn put_file(&self, name: &str, path: &Path, size: u64) -> Result<(), Attempt> {
        let key = self.key(name);
        if size <= self.part_bytes as u64 {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| Attempt::Permanent(format!("{}: {e}", path.display())))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(body)
                .send()
                .await
                .map_err(attempt)?;
            return Ok(());
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(attempt)?;
        let Some(upload_id) = upload.upload_id() else {
            return Err(Attempt::Transient("no upload id in the answer".into()));
        };
        let result = self.upload_parts(&key, upload_id, path, size).await;
        match result {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(attempt)?;
                Ok(())
            }
            Err(e) => {
                // Leave no half upload behind to be billed for.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, Attempt> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = (size - offset).min(self.part_bytes as u64);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(len))
                .build()
                .await
                .map_err(|e| Attempt::Permanent(format!("{}: {e}", path.display())))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(attempt)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        Ok(parts)
    }

    pub(crate) async fn size(&self, name: &str) -> Result<u64, Attempt> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(attempt)?;
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn get_object(
        &self,
        name: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, Attempt> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(attempt)
    }

    pub(crate) async fn get(&self, name: &str) -> Result<bytes::Bytes, Attempt> {
        let body = self
            .get_object(name)
            .await?
            .body
            .collect()
            .await
            .map_err(|e| Attempt::Transient(error_chain(&e)))?;
        Ok(body.into_bytes())
    }

    pub(crate) async fn get_to_file(&self, name: &str, to: &Path) -> Result<u64, Attempt> {
        use tokio::io::AsyncWriteExt;
        let mut out = self.get_object(name).await?;
        let io = |e: std::io::Error| Attempt::Transient(format!("{}: {e}", to.display()));
        let mut file = tokio::fs::File::create(to).await.map_err(io)?;
        let mut n = 0u64;
        while let Some(chunk) = out
            .body
            .try_next()
            .await
            .map_err(|e| Attempt::Transient(error_chain(&e)))?
        {
            file.write_all(&chunk).await.map_err(io)?;
            n += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        Ok(n)
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, Attempt> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.key(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(attempt)?;
            for o in page.contents() {
                if let Some(key) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(ListedObject {
                        name: key.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), Attempt> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(attempt)?;
        Ok(())
    }
}
