//! Unit tests of the MLflow client. The parent declares this file as `#[cfg(test)] mod tests;`, so
//! none of it is compiled into the library.

use super::*;

fn client(uri: &str) -> MlflowClient {
    MlflowClient::new(uri, HttpClient::builder().build().unwrap()).unwrap()
}

#[test]
fn artifact_urls() {
    let c = client("http://127.0.0.1:5000/");
    assert_eq!(
        c.artifact_target("mlflow-artifacts:/1/abc/artifacts", "ckpt/model v1.bin")
            .unwrap(),
        ArtifactTarget::Http(
            Url::parse("http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/ckpt/model%20v1.bin")
                .unwrap()
        )
    );
    let c = client("https://example.invalid/mlflow");
    assert_eq!(
        c.artifact_target("mlflow-artifacts:/1/abc/artifacts", "a.txt")
            .unwrap(),
        ArtifactTarget::Http(
            Url::parse("https://example.invalid/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a.txt")
                .unwrap()
        )
    );
    assert_eq!(
        c.artifact_target("mlflow-artifacts://other:81/1/r/artifacts", "a.txt")
            .unwrap(),
        ArtifactTarget::Http(
            Url::parse("https://other:81/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt")
                .unwrap()
        )
    );
    assert_eq!(
        c.artifact_target("file:///tmp/x", "a/b.txt").unwrap(),
        ArtifactTarget::Local(PathBuf::from("/tmp/x/a/b.txt"))
    );
    assert!(c.artifact_target("s3://bucket/x", "a").is_err());
    assert!(
        c.artifact_target("mlflow-artifacts:/1", "../etc/passwd")
            .is_err()
    );
    assert!(c.artifact_target("mlflow-artifacts:/1", "/abs").is_err());
}

#[test]
fn rejects_non_http_uris_and_inline_credentials() {
    let h = HttpClient::builder().build().unwrap();
    assert!(MlflowClient::new("sqlite:///mlflow.db", h.clone()).is_err());
    let e = MlflowClient::new("http://bob:pw-secret@127.0.0.1:5000", h).unwrap_err();
    assert!(!e.to_string().contains("pw-secret"));
}
