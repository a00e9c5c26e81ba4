//! Programs clients upload: checked by the backend, counted against the client's quota before any
//! await, kept in the store and a bounded cache, deleted when no client keeps them.

use plait_prover::ProgramImage;

use crate::{clients::DEFAULT_CLIENT, programs::OverQuota, store::StoreOp};

use super::Coordinator;
use crate::error::CoordinatorError;

impl Coordinator {
    /// [`Self::add_program_for`] the client of the shared token.
    pub async fn add_program(&self, bytes: Vec<u8>) -> Result<ProgramImage, CoordinatorError> {
        self.add_program_for(DEFAULT_CLIENT, bytes).await
    }

    /// Checks a program and stores it under its content hash, as one `client` uploaded
    /// (idempotent). A program the backend cannot run is refused and nothing is stored.
    pub async fn add_program_for(
        &self,
        client: &str,
        bytes: Vec<u8>,
    ) -> Result<ProgramImage, CoordinatorError> {
        let program = ProgramImage::new(bytes);
        self.backend.check_program(&program)?;
        let limit = self
            .clients
            .lock()
            .expect("clients lock")
            .limits(client)
            .max_program_bytes;
        self.remember_program(client, &program, limit)
            .map_err(
                |OverQuota { kept, limit }| CoordinatorError::OverProgramQuota {
                    client: client.into(),
                    limit,
                    kept,
                    asked: program.bytes.len() as u64,
                },
            )?;
        self.flush().await?;
        Ok(program)
    }

    /// Stores `program` as `client`'s, unless that takes the client over `limit` bytes of
    /// programs. Counted before any await, so that uploads sent at once cannot all pass.
    pub(super) fn remember_program(
        &self,
        client: &str,
        program: &ProgramImage,
        limit: Option<u64>,
    ) -> Result<(), OverQuota> {
        // The programs lock, then the owners', then the outbox's, as `delete_program_for`.
        let mut programs = self.programs.lock().expect("programs lock");
        let mut owners = self.program_owners.lock().expect("program owners lock");
        let newly_owned = owners.take(client, program, limit)?;
        let mut outbox = self.outbox.lock().expect("outbox lock");
        // A program new to its client is written again (a no-op if stored): another client's
        // deletion queued before may have removed it from the store.
        if programs.get(&program.digest).is_none() || newly_owned {
            programs.insert(program);
            outbox.push(StoreOp::Program {
                sha256: program.digest.clone(),
                bytes: program.bytes.clone(),
            });
        }
        if newly_owned {
            outbox.push(StoreOp::ProgramOwner {
                sha256: program.digest.clone(),
                client: client.to_string(),
            });
        }
        Ok(())
    }

    /// The programs `client` keeps, with their sizes.
    pub fn programs_of(&self, client: &str) -> Vec<plait_api::ProgramRecord> {
        self.program_owners
            .lock()
            .expect("program owners lock")
            .programs_of(client)
            .into_iter()
            .map(|(program_sha256, bytes)| plait_api::ProgramRecord {
                program_sha256,
                bytes,
            })
            .collect()
    }

    /// `client` no longer keeps the program `sha256`: its bytes leave the client's quota, and
    /// the program leaves the store once no client keeps it and no job names it.
    pub async fn delete_program_for(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<(), CoordinatorError> {
        {
            let mut programs = self.programs.lock().expect("programs lock");
            let mut owners = self.program_owners.lock().expect("program owners lock");
            if !owners.release(client, sha256) {
                return Err(CoordinatorError::UnknownProgram(sha256.into()));
            }
            // Read back from the store if still wanted (it may be gone from there).
            programs.remove(sha256);
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::DropProgramOwner {
                    sha256: sha256.into(),
                    client: client.into(),
                });
        }
        self.flush().await
    }

    /// The program `sha256`, if `client` uploaded it: a client cannot run or probe a program
    /// by its hash alone.
    pub async fn program_of(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<Option<ProgramImage>, CoordinatorError> {
        self.flush().await?;
        let Some(bytes) = self.store.program_of(client, sha256).await? else {
            return Ok(None);
        };
        let program = ProgramImage::new(bytes);
        self.programs
            .lock()
            .expect("programs lock")
            .insert(&program);
        Ok(Some(program))
    }

    /// The program `sha256`, from the cache or the store.
    pub(super) async fn stored_program(
        &self,
        sha256: &str,
    ) -> Result<Option<ProgramImage>, CoordinatorError> {
        if let Some(program) = self.programs.lock().expect("programs lock").get(sha256) {
            return Ok(Some(program));
        }
        Ok(self.store.program(sha256).await?.map(ProgramImage::new))
    }
}
