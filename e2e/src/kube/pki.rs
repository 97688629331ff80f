//! The control plane's certificates, keys and kubeconfigs, made with the machine's `openssl`
//! inside the control plane's temp dir and nowhere else.

use super::*;

impl ControlPlane {
    pub(super) fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bins.openssl);
        cmd.args(args);
        let (ok, _, err) = run_bounded(cmd, None, Duration::from_secs(30))?;
        anyhow::ensure!(ok, "openssl {}: {}", args.join(" "), err.trim());
        Ok(())
    }

    /// `pki/NAME.key` and `pki/NAME.crt` signed by the CA, for `subject`.
    pub(super) fn sign(
        &self,
        pki: &Path,
        name: &str,
        subject: &str,
        sans: Option<&str>,
    ) -> anyhow::Result<()> {
        let key = s(&pki.join(format!("{name}.key")));
        let csr = s(&pki.join(format!("{name}.csr")));
        let crt = s(&pki.join(format!("{name}.crt")));
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ])?;
        let ext = pki.join(format!("{name}.ext"));
        let usage = if sans.is_some() {
            "serverAuth"
        } else {
            "clientAuth"
        };
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                 extendedKeyUsage={usage}\n{}\n",
                sans.unwrap_or("")
            ),
        )?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &s(&self.ca_cert),
            "-CAkey",
            &s(&self.ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&ext),
            "-out",
            &crt,
        ])
    }

    /// A kubeconfig at `path` for the client certificate `pki/USER.{crt,key}`.
    pub(super) fn write_kubeconfig(&self, path: &Path, user: &str) -> anyhow::Result<()> {
        let pki = self.dir.path().join("pki");
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    \
                 server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    \
                 client-certificate: {}\n    client-key: {}\ncontexts:\n- name: e2e\n  \
                 context: {{cluster: e2e, user: {user}, namespace: default}}\n\
                 current-context: e2e\n",
                self.server,
                s(&self.ca_cert),
                s(&pki.join(format!("{user}.crt"))),
                s(&pki.join(format!("{user}.key"))),
            ),
        )?;
        Ok(())
    }
}
