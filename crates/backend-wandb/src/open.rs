//! Opening a run: the local transaction log and its first records (header, run, environment,
//! config), the run directory's layout, a companion's marker, and (online) the server side.

use super::*;

impl WandbTracker {
    pub(crate) fn open_run(&mut self, ctx: &RunContext) -> Result<()> {
        if let Some(active) = self.active.as_mut() {
            // A retried open: the local run exists; only the server side may be missing.
            return active.start_online(&self.settings);
        }
        let s = &self.settings;
        let tracking = ctx.config.get("tracking").and_then(toml::Value::as_table);
        let tracking_str = |key: &str| {
            tracking
                .and_then(|t| t.get(key))
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .filter(|v| !v.trim().is_empty())
        };
        let mut mode = match s.mode {
            Some(m) => m,
            None => tracking_str("wandb_mode")
                .map(|m| m.parse::<Mode>())
                .transpose()?
                .unwrap_or(Mode::Auto),
        };
        if mode == Mode::Auto {
            mode = if s.api_key.is_some() {
                Mode::Online
            } else {
                Mode::Offline
            };
        }
        if mode == Mode::Disabled {
            return Ok(());
        }
        if mode == Mode::Online && s.api_key.is_none() {
            return Err(Error::Config(
                "online mode needs an API key (WANDB_API_KEY, `wandb login`, or .api_key())".into(),
            ));
        }
        let companion = companion::Companion::from_settings(s, &ctx.metadata.run_id);
        let run_id = match &companion {
            Some(c) => c.run_id.clone(),
            None => sanitize_run_id(s.run_id.as_deref().unwrap_or(&ctx.metadata.run_id)),
        };
        let project = s
            .project
            .clone()
            .or_else(|| tracking_str("wandb_project"))
            .unwrap_or_else(|| sanitize_project(&ctx.metadata.experiment_name));
        let entity = s
            .entity
            .clone()
            .or_else(|| tracking_str("wandb_entity"))
            .unwrap_or_default();
        let base = s
            .dir
            .clone()
            .or_else(|| tracking_str("wandb_dir").map(PathBuf::from))
            // A companion's local run stays in its own run directory, away from the owner's.
            .unwrap_or_else(|| match &companion {
                Some(_) => ctx.run_dir.clone(),
                None => PathBuf::from("."),
            });
        let wandb_dir = base.join("wandb");
        let started: DateTime<Utc> = if ctx.resumed {
            Utc::now()
        } else {
            ctx.metadata.start_time
        };
        let stamp = started
            .with_timezone(&Local)
            .format("%Y%m%d_%H%M%S")
            .to_string();
        let prefix = match (mode == Mode::Online, companion.is_some()) {
            (true, false) => "run",
            (false, false) => "offline-run",
            // Not `offline-*`: a plain `wandb sync` skips it (see `companion::DIR_PREFIX`).
            (true, true) => "companion-run",
            (false, true) => "companion-offline-run",
        };
        let local = LocalRun::create(&wandb_dir, prefix, &stamp, &run_id)?;

        let md = &ctx.metadata;
        let axis = companion::StepAxis::from_settings(s);
        let mut state = RunState::for_writer(
            md.start_time.timestamp_millis(),
            axis.as_ref().map(|a| a.step_metric.clone()),
            companion.is_some(),
        );
        for (k, v) in run::toml_config(&ctx.config) {
            state.set_config(&k, v);
        }
        state.take_config_changes();
        for t in md.tags.iter().chain(&s.tags) {
            state.add_tag(t.clone());
        }
        state.take_tags_changed();
        let git = md.system.git.as_ref().map(|g| GitRepoRecord {
            remote_url: String::new(),
            commit: g.commit.clone(),
        });
        let host = if md.system.hostname.is_empty() {
            exptrack_core::metadata::hostname()
        } else {
            md.system.hostname.clone()
        };
        let mut run_record = RunRecord {
            run_id: run_id.clone(),
            entity: entity.clone(),
            project: project.clone(),
            config: Some(ConfigRecord {
                update: items(state.config()),
                remove: Vec::new(),
            }),
            run_group: s.group.clone().unwrap_or_else(|| md.experiment_id.clone()),
            job_type: s.job_type.clone().unwrap_or_default(),
            display_name: s
                .display_name
                .clone()
                .unwrap_or_else(|| md.experiment_name.clone()),
            notes: s.notes.clone().unwrap_or_else(|| md.description.clone()),
            tags: state.tags().to_vec(),
            host: host.clone(),
            start_time: Some(Timestamp::from_millis(md.start_time.timestamp_millis())),
            resumed: ctx.resumed,
            runtime: 0,
            git: git.clone(),
            resume: false,
        };
        if let Some(c) = &companion {
            c.run_record(&mut run_record);
        }
        let program = std::env::args().next().unwrap_or_default();
        let environment = EnvironmentRecord {
            os: md.system.os.clone(),
            started_at: Some(Timestamp::from_millis(started.timestamp_millis())),
            program: program.clone(),
            git,
            root: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            host,
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or(program),
            cpu_count_logical: u32::try_from(md.system.cpu_cores).unwrap_or(0),
            memory: (md.system.total_memory_bytes > 0).then_some(MemoryInfo {
                total: md.system.total_memory_bytes,
            }),
            cpu: (!md.system.cpu_model.is_empty()).then(|| CpuInfo {
                count: 0,
                count_logical: u32::try_from(md.system.cpu_cores).unwrap_or(0),
                model: md.system.cpu_model.clone(),
            }),
            writer_id: String::new(),
        };
        let mut active = Active {
            run_id,
            mode,
            project,
            entity,
            state,
            local,
            online: None,
            last_seq: None,
            status: None,
            run_record,
            environment,
            files_dirty: true,
            uploads: Vec::new(),
            run_update_pending: false,
            closed_local: None,
            start_ms: md.start_time.timestamp_millis(),
            checkpoints: exptrack_core::store::resumed_checkpoints(ctx),
            companion,
            axis,
        };
        if !active.checkpoints.is_empty() {
            // A resumed run keeps showing the checkpoints of before.
            active.show_checkpoints();
        }
        active.local.append(RecordType::Header(HeaderRecord {
            version_info: Some(VersionInfo {
                producer: concat!("exptrack-wandb ", env!("CARGO_PKG_VERSION")).to_owned(),
                min_consumer: "0.70.0".to_owned(),
            }),
        }))?;
        active
            .local
            .append(RecordType::Run(active.run_record.clone()))?;
        active
            .local
            .append(RecordType::Environment(active.environment.clone()))?;
        active
            .local
            .write_file("wandb-metadata.json", active.metadata_json().as_bytes())?;
        active.write_files()?;
        if let (Some(c), Some(axis)) = (&active.companion, &active.axis) {
            c.write_marker(&active.local, &axis.step_metric)?;
        }
        active.local.flush()?;
        self.active = Some(active);
        if let Some(active) = self.active.as_mut() {
            active.start_online(&self.settings)?;
        }
        Ok(())
    }
}

impl Active {
    pub(crate) fn start_online(&mut self, s: &WandbTrackerBuilder) -> Result<()> {
        if self.mode != Mode::Online || self.online.is_some() {
            return Ok(());
        }
        let key = s
            .api_key
            .as_ref()
            .ok_or_else(|| Error::Config("no API key".into()))?;
        let fields = self.companion_fields(RunFields {
            run_id: self.run_id.clone(),
            project: self.project.clone(),
            entity: (!self.entity.is_empty()).then(|| self.entity.clone()),
            group: Some(self.run_record.run_group.clone()),
            display_name: Some(self.run_record.display_name.clone()),
            notes: Some(self.run_record.notes.clone()),
            commit: self.run_record.git.as_ref().map(|g| g.commit.clone()),
            host: Some(self.run_record.host.clone()),
            program: Some(self.environment.program.clone()),
            job_type: Some(self.run_record.job_type.clone()),
            shared_client_id: None,
        });
        let online = OnlineRun::start(
            s.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            key,
            s.http.clone().unwrap_or_else(default_retry),
            s.flush_interval
                .unwrap_or(std::time::Duration::from_secs(5)),
            fields,
            &companion::run_config_json(self.companion.as_ref(), self.axis.as_ref(), &self.state),
            self.state.tags(),
        )?;
        self.entity = online.entity().to_owned();
        self.online = Some(online);
        Ok(())
    }
}
